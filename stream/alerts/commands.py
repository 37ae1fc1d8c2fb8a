"""Entry functions of the ``vitalrisk ack``, ``silence`` and ``unsilence`` commands.

Both write straight to the database as the alerter's role (``vitalrisk_alerter``, unless
``VITALS_DATABASE_URL`` names another user), recording who and when; the alerter that owns the
patient applies them within a second. Errors a user can fix raise
:class:`~kernel.errors.VitalsError` subclasses (one line on stderr, exit 1 or 2). The database
is checked first: the store's pool would retry a server that is down for seconds, logging each try.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, UTC

from infra.preflight import require_database
from kernel.settings import ALERTER_ROLE, Settings
from sinks.alert_store import AlertStore
from stream.alerts.silence_rules import SilenceBounds


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def run_ack(settings: Settings, alert_id: str, *, by: str) -> int:
    """Acknowledge a firing alert as ``by``; print who acknowledged it and when.

    Raises
    ------
    UnknownAlert, AlertNotFiring
        No such alert, or it is resolved.
    ServiceUnavailable, AlertStoreUnavailable
        The database is down (before the start, or after).
    """
    settings = settings.for_service(ALERTER_ROLE)
    require_database(settings.database_url)

    async def main() -> tuple[str, int]:
        async with AlertStore(settings.database_url, retry_for_s=10) as store:
            return await store.acknowledge(alert_id, by=by, via="cli")

    who, at_ms = asyncio.run(main())
    note = "" if who == by else " (it had already been acknowledged)"
    print(f"alert {alert_id} acknowledged by {who} at {_iso(at_ms)}{note}")
    return 0


def run_silence(settings: Settings, *, patient_id: str | None, all_patients: bool, kind: str | None,
                minutes: float, by: str, reason: str) -> int:
    """Silence pages for one patient (or every patient, briefly) and/or kind for ``minutes``; print its id and end.

    ``kind`` may be a prefix (``risk_high`` silences every condition); ``None`` matches every kind.

    Raises
    ------
    InvalidRequest
        Wider or longer than :class:`~stream.alerts.silence_rules.SilenceBounds` allows.
    """
    SilenceBounds.from_settings(settings).check(patient_id=patient_id, all_patients=all_patients, minutes=minutes)
    settings = settings.for_service(ALERTER_ROLE)
    require_database(settings.database_url)

    async def main() -> tuple[str, int]:
        async with AlertStore(settings.database_url, retry_for_s=10) as store:
            created = await store.add_silence(patient_id=patient_id, kind=kind, minutes=minutes, by=by, reason=reason)
            return created.silence_id, created.ends_ms

    silence_id, ends_ms = asyncio.run(main())
    scope = f"patient {patient_id or 'all'}, kind {kind or 'all'}"
    print(f"silence {silence_id} ({scope}) by {by} until {_iso(ends_ms)}")
    return 0


def run_unsilence(settings: Settings, silence_id: str, *, by: str) -> int:
    """End a silence now as ``by``; print when it ended.

    Raises
    ------
    UnknownSilence, SilenceEnded
        No such silence, or it has already ended.
    """
    settings = settings.for_service(ALERTER_ROLE)
    require_database(settings.database_url)

    async def main() -> int:
        async with AlertStore(settings.database_url, retry_for_s=10) as store:
            return (await store.end_silence(silence_id, by=by)).ends_ms

    ends_ms = asyncio.run(main())
    print(f"silence {silence_id} ended by {by} at {_iso(ends_ms)}")
    return 0
