"""Alerting: a pure engine (rules, state, engine, replay) and its adapters (service, store, commands).

The pure modules import no Kafka, database, HTTP client or clock; ``service``, ``store`` and
``commands`` are the thin adapters around them.
"""

from stream.alerts.engine import AlertEngine, AlertEvent, Outcome, Page
from stream.alerts.replay import replay_pages
from stream.alerts.rules import AlertPolicy, Silence, Threshold, Timers
from stream.alerts.state import AlertState, Evidence, PatientState, Phase

__all__ = ["AlertEngine", "AlertEvent", "AlertPolicy", "AlertState", "Evidence", "Outcome", "Page", "PatientState",
           "Phase", "Silence", "Threshold", "Timers", "replay_pages"]
