"""``vitalrisk worker``: run one Faust worker process with its metrics endpoint."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, start_http_server

from sinks.metrics import PipelineMetrics
from stream.settings import Settings

logger = logging.getLogger(__name__)


def run_worker(settings: Settings) -> int:
    """Block running the worker until SIGTERM or SIGINT; return its exit status."""
    import faust

    from stream.app import create_app

    if settings.admin_database_url:
        from sinks.migrations import SinkPolicies, migrate

        applied = migrate(settings.admin_database_url, policies=SinkPolicies.from_settings(settings))
        if applied:
            logger.info("applied migrations %s", applied)
    registry = CollectorRegistry()
    metrics = PipelineMetrics(registry)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)
        logger.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    app = create_app(settings, metrics=metrics)
    worker = faust.Worker(app, loglevel="INFO", quiet=True)
    worker.execute_from_commandline()  # exits the process itself when the worker stops
    return 0
