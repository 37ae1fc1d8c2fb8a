"""Alerting: a pure engine (rules, engine, replay, routing) and its adapters (service, api, delivery, commands).

The records the engine shares with the sinks (alert state, pages, silences) are in :mod:`kernel.alerts`;
the PostgreSQL alert store is :mod:`sinks.alert_store`.

The pure modules import no Kafka, database, HTTP client or clock; ``service``, ``api``,
``delivery`` and ``commands`` are the thin adapters around them.
"""

from stream.alerts.engine import AlertEngine, Effects
from stream.alerts.replay import replay_pages
from stream.alerts.rules import AlertPolicy, Threshold, Timers

__all__ = ["AlertEngine", "AlertPolicy", "Effects", "Threshold", "Timers", "replay_pages"]
