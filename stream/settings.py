"""One typed settings object, read from the environment once and passed down.

Every variable carries the ``VITALS_`` prefix (``VITALS_KAFKA_BOOTSTRAP``,
``VITALS_DATABASE_URL``, ...). Nothing else in the code base reads ``os.environ``.

Examples
--------
>>> s = Settings(kafka_bootstrap="127.0.0.1:19092", partitions=3)
>>> s.partitions, s.readings_topic
(3, 'vitals.readings')
>>> s.window_ms
60000
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Immutable configuration of every vitalrisk process."""

    model_config = SettingsConfigDict(env_prefix="VITALS_", frozen=True, extra="ignore")

    state_dir: Path = Field(Path(".local"), description="local services' data and logs (git-ignored)")

    # Kafka
    kafka_bootstrap: str = Field("127.0.0.1:19092", description="host:port of the Kafka broker(s)")
    partitions: int = Field(6, ge=1, le=1024, description="partitions of every topic we create")
    readings_topic: str = "vitals.readings"
    deadletter_topic: str = "vitals.deadletter"
    outcomes_topic: str = "vitals.outcomes"
    scores_topic: str = "risk.scores"

    # Faust worker
    app_id: str = Field("vitalrisk", description="Faust application id: consumer group and table prefix")
    data_dir: Path = Field(Path(".local/faust"), description="Faust's local state directory")
    window_ms: int = Field(60_000, gt=0, description="tumbling window length, event time")
    grace_ms: int = Field(30_000, ge=0, description="how far behind the watermark an event may arrive")
    idle_timeout_s: float = Field(
        10.0, gt=0, description="wall-clock seconds without events after which open windows close"
    )
    max_future_ms: int = Field(
        5 * 60_000, ge=0, description="readings further ahead of the watermark than this are rejected"
    )
    news2_carry_ms: int = Field(
        12 * 3_600_000, ge=0, description="how long a vital's last window mean stands in for a missing one"
    )
    metrics_host: str = Field("127.0.0.1", description="address the /metrics endpoint binds")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics port; 0 disables")
    web_port: int = Field(6066, ge=1, le=65535, description="Faust's own web server port")

    # PostgreSQL / TimescaleDB
    database_url: str = Field(
        "postgresql://vitalrisk_writer@127.0.0.1:15432/vitalrisk",
        description="libpq URL the pipeline writes with (the writer role)",
    )
    admin_database_url: str | None = Field(
        None, description="URL of the schema owner; when set, the worker applies migrations at start"
    )
    sink_batch_rows: int = Field(5_000, gt=0, description="flush the sink after this many rows")
    sink_flush_s: float = Field(1.0, gt=0, description="flush the sink at least this often")

    def as_env(self) -> dict[str, str]:
        """These settings as ``VITALS_*`` variables, for a child process to read back.

        >>> Settings(partitions=2).as_env()["VITALS_PARTITIONS"]
        '2'
        """
        return {f"VITALS_{name.upper()}": str(value) for name, value in self.model_dump().items()
                if value is not None}
