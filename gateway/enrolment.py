"""``vitalrisk devices enroll | list | revoke``: device credentials for the ingest gateway.

``enroll`` binds a device to one patient and prints its token once, alone on stdout (so
``TOKEN=$(vitalrisk devices enroll --patient pt-1)`` captures it), with a line about it on
stderr; only the token's SHA-256 is stored (:mod:`gateway.tokens`). ``list`` shows the
credentials (never a token or digest), ``revoke`` ends one at once: the gateway refuses the
token within ``VITALS_GATEWAY_AUTH_CACHE_S``. All three run as the schema owner.

``enroll --cohort N --out FILE`` enrols every device of a simulated cohort at once (the load
generator's, ``vitalrisk simulate --rate R --via-gateway URL --tokens FILE``) and writes the
tokens to a *tokens file*: one JSON object a line, ``{"device_id", "patient_id", "token"}``,
created with mode 0600 and never overwritten. The file is written before the enrolment commits
and removed if it fails, so no device is left enrolled with a token nobody holds.

Examples
--------
>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "tokens.jsonl"
>>> with create_tokens_file(path) as handle:
...     write_tokens(handle, [DeviceToken("dev-1", "pt-1", "vrd1.0123456789ab.secret")])
>>> oct(path.stat().st_mode & 0o777), read_tokens(path)
('0o600', [DeviceToken(device_id='dev-1', patient_id='pt-1')])
>>> create_tokens_file(path)
Traceback (most recent call last):
...
kernel.errors.ConfigurationError: the tokens file ... exists: it may hold the tokens of enrolled devices; choose another --out
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from gateway.tokens import issue_token
from kernel.errors import ConfigurationError
from kernel.limits import valid_id
from kernel.settings import Settings
from sinks.devices import DeviceRow, enroll, enroll_many, list_devices, revoke

logger = logging.getLogger(__name__)

#: A tokens file is readable and writable by its owner only.
TOKENS_FILE_MODE = 0o600


@dataclass(frozen=True, slots=True)
class DeviceToken:
    """One line of a tokens file: a device, its patient and its token (``repr`` hides the token)."""

    device_id: str
    patient_id: str
    token: str

    def __repr__(self) -> str:
        return f"DeviceToken(device_id={self.device_id!r}, patient_id={self.patient_id!r})"


def create_tokens_file(path: Path) -> TextIO:
    """A new tokens file opened for writing, mode 0600; one that exists is never overwritten.

    Raises
    ------
    ConfigurationError
        The file exists, or cannot be created.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, TOKENS_FILE_MODE)
    except FileExistsError:
        raise ConfigurationError(f"the tokens file {path} exists: it may hold the tokens of enrolled devices; "
                                 "choose another --out") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot create the tokens file {path}: {exc.strerror}") from None
    return os.fdopen(fd, "w", encoding="utf-8")


def write_tokens(handle: TextIO, tokens: Iterable[DeviceToken]) -> None:
    """Write ``tokens`` as tokens-file lines and make sure they are on disk."""
    for item in tokens:
        handle.write(json.dumps({"device_id": item.device_id, "patient_id": item.patient_id,
                                 "token": item.token}) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


def read_tokens(path: Path) -> list[DeviceToken]:
    """The lines of a tokens file (a warning is logged if others may read it).

    Raises
    ------
    ConfigurationError
        The file cannot be read, or a line is not a device's token (the line is never quoted:
        it may hold a token).
    """
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigurationError(f"cannot read the tokens file {path}: {reason}") from None
    if mode & 0o077:
        logger.warning("the tokens file %s may be read by others (mode %o): it holds device tokens; "
                       "chmod 600 it", path, mode & 0o777)
    tokens: list[DeviceToken] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            token = DeviceToken(item["device_id"], item["patient_id"], item["token"])
        except (ValueError, TypeError, KeyError):
            token = None
        if token is None or not all(isinstance(v, str) for v in (token.device_id, token.patient_id, token.token)) \
                or not (valid_id(token.device_id) and valid_id(token.patient_id)):
            raise ConfigurationError(f"{path} line {number} is not a device token: each line is a JSON object "
                                     "with device_id, patient_id and token (`vitalrisk devices enroll --out`)")
        tokens.append(token)
    if not tokens:
        raise ConfigurationError(f"the tokens file {path} holds no token")
    return tokens


def enroll_to_file(url: str, devices: Sequence[tuple[str, str]], path: Path) -> list[DeviceRow]:
    """Enrol every ``(device_id, patient_id)`` at once and write their tokens to a new tokens file.

    All or nothing: the file is written before the enrolment commits and removed if it fails.
    """
    handle = create_tokens_file(path)
    try:
        with handle:
            made = enroll_many(url, devices, issue=issue_token, keep=lambda made: write_tokens(
                handle, (DeviceToken(row.device_id, row.patient_id, issued.token) for row, issued in made)))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return [row for row, _ in made]


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
                cohort: Sequence[tuple[str, str]] | None = None, tokens_path: Path | None = None,
                out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Carry out one ``devices`` action against the device table at ``url`` (the schema owner's).

    ``enroll`` enrols ``patient``'s ``device``, or with ``tokens_path`` every ``(device_id,
    patient_id)`` of ``cohort`` (or that one device), writing the tokens to a new tokens file.

    Raises
    ------
    DeviceAlreadyEnrolled, UnknownDevice
        What the user asked cannot be done (exit status 2).
    SinkUnavailable
        The database cannot be reached or is not migrated.
    """
    out, err = out or sys.stdout, err or sys.stderr  # looked up now: a test may have replaced them
    if action == "enroll":
        if tokens_path is not None:
            pairs = list(cohort) if cohort is not None else [(device or new_device_id(), patient or "")]
            rows = enroll_to_file(url, pairs, tokens_path)
            first = rows[0]
            more = f" and {len(rows) - 1:,} more" if len(rows) > 1 else ""
            print(f"enrolled device {first.device_id} for patient {first.patient_id}{more}; the tokens are in "
                  f"{tokens_path} (mode 0600, one JSON object a line) and nowhere else", file=err)
            return 0
        if patient is None:
            raise ValueError("enroll needs a patient id, or a cohort and a tokens file")
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
