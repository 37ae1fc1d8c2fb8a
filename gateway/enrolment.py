"""``vitalrisk devices enroll | list | revoke``: device credentials for the ingest gateway.

``enroll`` binds a device to one patient and prints its token once, alone on stdout (so
``TOKEN=$(vitalrisk devices enroll --patient pt-1)`` captures it), with a line about it on
stderr; only the token's SHA-256 is stored (:mod:`gateway.tokens`). ``list`` shows the
credentials (never a token or digest), ``revoke`` ends one at once: the gateway refuses the
token within ``VITALS_GATEWAY_AUTH_CACHE_S``. All three run as the schema owner.
"""

from __future__ import annotations

import secrets
import sys
from datetime import UTC, datetime
from typing import TextIO

from gateway.tokens import issue_token
from kernel.settings import Settings
from sinks.devices import DeviceRow, enroll, list_devices, revoke


def new_device_id() -> str:
    """A fresh pseudonymous device id, ``dev-`` and 8 random hex digits.

    >>> new_device_id().startswith("dev-"), len(new_device_id())
    (True, 12)
    """
    return f"dev-{secrets.token_hex(4)}"


def _when(at: datetime | None) -> str:
    return "-" if at is None else at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_rows(rows: list[DeviceRow]) -> list[str]:
    """``devices list`` lines: a header, then one line per credential.

    >>> at = datetime(2026, 1, 5, tzinfo=UTC)
    >>> print("\\n".join(format_rows([DeviceRow("dev-1", "pt-1", "0123456789ab", at, None, None)])))
    device  patient  token id      created               last seen  revoked
    dev-1   pt-1     0123456789ab  2026-01-05T00:00:00Z  -          -
    """
    table = [("device", "patient", "token id", "created", "last seen", "revoked")]
    table += [(r.device_id, r.patient_id, r.token_id, _when(r.created_at), _when(r.last_seen), _when(r.revoked_at))
              for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in table]


def run_devices(settings: Settings, action: str, *, url: str, patient: str | None = None,
                device: str | None = None, include_revoked: bool = False,
                out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Carry out one ``devices`` action against the device table at ``url`` (the schema owner's).

    Raises
    ------
    DeviceAlreadyEnrolled, UnknownDevice
        What the user asked cannot be done (exit status 2).
    SinkUnavailable
        The database cannot be reached or is not migrated.
    """
    if action == "enroll":
        if patient is None:
            raise ValueError("enroll needs a patient id")
        row, issued = enroll(url, device_id=device or new_device_id(), patient_id=patient, issue=issue_token)
        print(f"enrolled device {row.device_id} for patient {row.patient_id} (token id {row.token_id}); "
              "the token below is shown once: store it on the device", file=err)
        print(issued.token, file=out)
        return 0
    if action == "list":
        rows = list_devices(url, patient_id=patient, include_revoked=include_revoked)
        for line in format_rows(rows):
            print(line, file=out)
        return 0
    if action == "revoke":
        if device is None:
            raise ValueError("revoke needs a device id")
        row = revoke(url, device)
        print(f"revoked device {row.device_id} (token id {row.token_id}); the gateway refuses its token within "
              f"{settings.gateway_auth_cache_s:g} s", file=out)
        return 0
    raise ValueError(f"unknown devices action {action!r}")
