"""``vitalrisk infra``: both local services behind one start / stop / status."""

from __future__ import annotations

from infra.kafka import LocalKafka
from infra.postgres import LocalPostgres
from stream.settings import Settings


def run_infra(settings: Settings, action: str, service: str) -> int:
    """Apply ``action`` to ``service`` ("kafka", "postgres" or "all"); print each one's status."""
    chosen: list[LocalKafka | LocalPostgres] = []
    if service in ("postgres", "all"):
        chosen.append(LocalPostgres(settings))
    if service in ("kafka", "all"):
        chosen.append(LocalKafka(settings))
    for svc in chosen:
        if action == "start":
            svc.start()
        elif action == "stop":
            svc.stop()
        print(svc.status())
    return 0
