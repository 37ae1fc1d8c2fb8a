"""``vitalrisk worker`` (and the alerter): run one Faust app as a process with its metrics endpoint."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from models.snapshots import signing_key
from sinks.metrics import KafkaMetrics, ModelMetrics, PipelineMetrics, serve_metrics
from kernel.errors import ConfigurationError
from infra.preflight import require_database, require_kafka
from kernel.settings import WORKER_ROLE, Settings
from sinks.migrations import SinkPolicies, migrate
from stream.app import create_app

if TYPE_CHECKING:
    import faust

logger = logging.getLogger(__name__)


def serve(settings: Settings, build: Callable[[CollectorRegistry], faust.App]) -> int:
    """Expose metrics, check the services, migrate (given the owner's URL), then block running ``build``'s app.

    Returns the exit status once SIGTERM or SIGINT has stopped the worker.

    Raises
    ------
    ServiceUnavailable
        Kafka or PostgreSQL does not answer: checked before Faust starts, which would report
        it with a traceback from its event loop.
    PortInUse
        The metrics port is taken.
    ConfigurationError
        Faust's state folder cannot be created.
    """
    import faust

    # Faust creates only the last folder of its datadir; a fresh clone has none of its parents.
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"cannot create Faust's state folder VITALS_DATA_DIR={settings.data_dir}: "
                                 f"{exc.strerror or exc}") from None
    registry = CollectorRegistry()
    serving = serve_metrics(settings, registry)  # first: a taken port is this machine's to fix, whatever else is down
    require_kafka(settings)
    require_database(settings.database_url)
    if settings.admin_database_url:
        require_database(settings.admin_database_url, setting="VITALS_ADMIN_DATABASE_URL")
    if serving:  # logged once the checks passed: a failed start prints its one line only
        logger.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    if settings.admin_database_url:
        applied = migrate(settings.admin_database_url, policies=SinkPolicies.from_settings(settings),
                          timescale=settings.sink_timescale)
        if applied:
            logger.info("applied migrations %s", applied)
    app = build(registry)
    worker = faust.Worker(app, loglevel="INFO", quiet=True)
    worker.execute_from_commandline()  # exits the process itself when the worker stops (NoReturn)


def run_worker(settings: Settings) -> int:
    """Block running the pipeline worker until SIGTERM or SIGINT; return its exit status.

    Raises
    ------
    SnapshotKeyMissing
        ``VITALS_SNAPSHOT_KEY`` is set but too short: a setting to fix, so reported before any
        service is checked (unset, the worker scores NEWS2 only).
    """
    settings = settings.for_service(WORKER_ROLE)
    if settings.snapshot_key is not None:
        signing_key(settings.snapshot_key)

    return serve(settings, lambda registry: worker_app(settings, registry))


def worker_app(settings: Settings, registry: CollectorRegistry) -> faust.App:
    """The pipeline worker's Faust app, its metrics in ``registry``."""
    return create_app(settings, metrics=PipelineMetrics(registry), model_metrics=ModelMetrics(registry),
                      kafka_metrics=KafkaMetrics(registry))
