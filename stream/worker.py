"""``vitalrisk worker`` (and the alerter): run one Faust app as a process with its metrics endpoint."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server

from sinks.metrics import ModelMetrics, PipelineMetrics
from stream.settings import Settings

if TYPE_CHECKING:
    import faust

logger = logging.getLogger(__name__)


def serve(settings: Settings, build: Callable[[CollectorRegistry], "faust.App"]) -> int:
    """Migrate (when given the owner's URL), expose metrics, then block running ``build``'s app.

    Returns the exit status once SIGTERM or SIGINT has stopped the worker.
    """
    import faust

    if settings.admin_database_url:
        from sinks.migrations import SinkPolicies, migrate

        applied = migrate(settings.admin_database_url, policies=SinkPolicies.from_settings(settings),
                          timescale=settings.sink_timescale)
        if applied:
            logger.info("applied migrations %s", applied)
    # Faust creates only the last folder of its datadir; a fresh clone has none of its parents.
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    registry = CollectorRegistry()
    app = build(registry)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)
        logger.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    worker = faust.Worker(app, loglevel="INFO", quiet=True)
    worker.execute_from_commandline()  # exits the process itself when the worker stops
    return 0


def run_worker(settings: Settings) -> int:
    """Block running the pipeline worker until SIGTERM or SIGINT; return its exit status."""
    from stream.app import create_app

    return serve(settings, lambda registry: create_app(settings, metrics=PipelineMetrics(registry),
                                                       model_metrics=ModelMetrics(registry)))
