"""Device credentials in PostgreSQL (``gateway.devices``, ``sinks/sql/0011_devices.sql``).

Two users, two roles:

- ``vitalrisk devices enroll | list | revoke`` run as the schema owner (the migrator's URL):
  :func:`enroll`, :func:`list_devices`, :func:`revoke`. Enrolment stores the token's public id
  and SHA-256 digest (made by :mod:`gateway.tokens`), never the token.
- The gateway runs as ``vitalrisk_gateway``, which may only read the table and set
  ``last_seen``: :class:`DeviceDirectory` looks a token id up (:meth:`~DeviceDirectory.lookup`)
  and records, in batches, when devices were last seen (:meth:`~DeviceDirectory.touch`).

A device holds at most one credential that is not revoked (a partial unique index); revoked
rows stay as the record of who held which credential when.

Errors: :class:`~sinks.errors.SinkUnavailable` when the database cannot be reached,
:class:`~sinks.errors.DeviceAlreadyEnrolled` and :class:`~sinks.errors.UnknownDevice` (exit
status 2) for what the user asked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Protocol, TypeVar

import psycopg
from psycopg import errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from kernel.errors import first_line
from kernel.limits import ID_PATTERN, valid_id
from sinks.errors import DeviceAlreadyEnrolled, SinkRejected, SinkUnavailable, UnknownDevice

logger = logging.getLogger(__name__)

#: Seconds to wait for a connection (libpq's connect_timeout is whole seconds).
CONNECT_TIMEOUT_S = 5
#: Seconds an upload waits for a pooled connection before the lookup counts as failed.
POOL_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class DeviceCredential:
    """What the gateway needs to authenticate one token: whose it is and its stored digest."""

    token_id: str
    device_id: str
    patient_id: str
    token_sha256: bytes
    revoked: bool

    def __repr__(self) -> str:  # the digest is no secret, but it has no place in a log line either
        return (f"DeviceCredential(token_id={self.token_id!r}, device_id={self.device_id!r}, "
                f"patient_id={self.patient_id!r}, revoked={self.revoked!r})")


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """One credential as ``vitalrisk devices list`` shows it (no digest)."""

    device_id: str
    patient_id: str
    token_id: str
    created_at: datetime
    revoked_at: datetime | None
    last_seen: datetime | None


def _check_ids(**ids: str) -> None:
    for name, value in ids.items():
        if not valid_id(value):
            raise ValueError(f"{name} must match {ID_PATTERN}, got {value!r}")


def _connect(url: str) -> psycopg.Connection:
    try:
        return psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True,
                               application_name="vitalrisk-devices")
    except psycopg.OperationalError as exc:
        raise SinkUnavailable(f"the device table cannot be reached: {first_line(exc)}") from None




class IssuedCredential(Protocol):
    """A new token's public id and the digest to store (:class:`gateway.tokens.IssuedToken`)."""

    @property
    def token_id(self) -> str: ...
    @property
    def digest(self) -> bytes: ...


_Issued = TypeVar("_Issued", bound=IssuedCredential)
#: Token ids drawn before giving up: with 48 random bits, a second draw is already a curiosity.
TOKEN_ID_DRAWS = 3


def enroll(url: str, *, device_id: str, patient_id: str, issue: Callable[[], _Issued]) -> tuple[DeviceRow, _Issued]:
    """Store a new credential from ``issue()`` binding ``device_id`` to ``patient_id``.

    ``issue`` makes the token (:func:`gateway.tokens.issue_token`); it is called again if its
    token id is taken already. Returns the stored row and the issued credential.

    Raises
    ------
    ValueError
        An id that breaks the id rule, or a digest that is not 32 bytes.
    DeviceAlreadyEnrolled
        The device holds a credential that is not revoked.
    SinkUnavailable
        The database cannot be reached, or is not migrated.
    """
    _check_ids(device_id=device_id, patient_id=patient_id)
    with _connect(url) as conn:
        return _insert(conn, device_id, patient_id, issue)


def enroll_many(url: str, devices: Sequence[tuple[str, str]], *, issue: Callable[[], _Issued],
                keep: Callable[[list[tuple[DeviceRow, _Issued]]], None]) -> list[tuple[DeviceRow, _Issued]]:
    """Enrol every ``(device_id, patient_id)`` of ``devices`` in one transaction: all of them or none.

    ``keep`` is handed the new credentials before the transaction commits, to store their tokens
    (a file): if it raises, nothing is enrolled, so no device is left enrolled with a token
    nobody holds. Raises what :func:`enroll` raises, and ``ValueError`` for a device named twice.

    >>> enroll_many("postgresql://x", [("dev-1", "pt-1"), ("dev-1", "pt-2")], issue=None, keep=None)
    Traceback (most recent call last):
    ...
    ValueError: device dev-1 is named twice
    """
    seen: set[str] = set()
    for device_id, patient_id in devices:
        _check_ids(device_id=device_id, patient_id=patient_id)
        if device_id in seen:
            raise ValueError(f"device {device_id} is named twice")
        seen.add(device_id)
    with _connect(url) as conn:
        try:
            with conn.transaction():
                made = [_insert(conn, device_id, patient_id, issue) for device_id, patient_id in devices]
                keep(made)
        except psycopg.OperationalError as exc:  # the connection broke, perhaps during the commit
            raise SinkUnavailable(f"the enrolment failed and may not have been committed: {first_line(exc)}") from None
    return made


def _insert(conn: psycopg.Connection, device_id: str, patient_id: str,
            issue: Callable[[], _Issued]) -> tuple[DeviceRow, _Issued]:
    """One new credential; each try in a transaction of its own (a savepoint inside :func:`enroll_many`'s)."""
    for _ in range(TOKEN_ID_DRAWS):
        issued = issue()
        if len(issued.digest) != 32:
            raise ValueError(f"a token digest must be 32 bytes (SHA-256), got {len(issued.digest)}")
        try:
            with conn.transaction():
                row = conn.execute("INSERT INTO gateway.devices (token_id, device_id, patient_id, token_sha256) "
                                   "VALUES (%s, %s, %s, %s) "
                                   "RETURNING device_id, patient_id, token_id, created_at, revoked_at, last_seen",
                                   (issued.token_id, device_id, patient_id, issued.digest)).fetchone()
        except errors.UniqueViolation as exc:
            if exc.diag.constraint_name == "devices_one_active_idx":
                raise DeviceAlreadyEnrolled(f"device {device_id} is already enrolled; revoke it first with "
                                            f"`vitalrisk devices revoke {device_id}`") from None
            continue  # the token id was drawn before: draw another
        except errors.UndefinedTable:
            raise SinkUnavailable("the device table does not exist: run `vitalrisk migrate`") from None
        if row is not None:
            return DeviceRow(*row), issued
    raise SinkRejected(f"no free token id in {TOKEN_ID_DRAWS} draws")


def list_devices(url: str, *, patient_id: str | None = None, include_revoked: bool = False) -> list[DeviceRow]:
    """Credentials, newest first: the active ones, or all with ``include_revoked``."""
    with _connect(url) as conn:
        try:
            rows = conn.execute("SELECT device_id, patient_id, token_id, created_at, revoked_at, last_seen "
                                "FROM gateway.devices WHERE (%s::text IS NULL OR patient_id = %s) "
                                "AND (%s OR revoked_at IS NULL) ORDER BY created_at DESC, device_id",
                                (patient_id, patient_id, include_revoked)).fetchall()
        except errors.UndefinedTable:
            raise SinkUnavailable("the device table does not exist: run `vitalrisk migrate`") from None
    return [DeviceRow(*row) for row in rows]


def revoke(url: str, device_id: str) -> DeviceRow:
    """Revoke the device's active credential at once; return it.

    The gateway refuses the token from its next lookup: within ``VITALS_GATEWAY_AUTH_CACHE_S``.

    Raises
    ------
    UnknownDevice
        The device holds no credential that is not revoked.
    """
    with _connect(url) as conn:
        try:
            row = conn.execute("UPDATE gateway.devices SET revoked_at = now() "
                               "WHERE device_id = %s AND revoked_at IS NULL "
                               "RETURNING device_id, patient_id, token_id, created_at, revoked_at, last_seen",
                               (device_id,)).fetchone()
        except errors.UndefinedTable:
            raise SinkUnavailable("the device table does not exist: run `vitalrisk migrate`") from None
    if row is None:
        raise UnknownDevice(f"no enrolled device {device_id!r} (or it is revoked already); "
                            "see `vitalrisk devices list`")
    return DeviceRow(*row)


class DeviceDirectory:
    """The gateway's asynchronous view of the device table, through a small connection pool.

    Use as ``async with DeviceDirectory(url) as directory:``.

    Parameters
    ----------
    url
        libpq URL of the gateway role (``VITALS_GATEWAY_DATABASE_URL``).
    max_connections
        Pool size; lookups are single-row index reads, so a few connections serve many uploads.
    """

    def __init__(self, url: str, *, max_connections: int = 4) -> None:
        self._pool = AsyncConnectionPool(url, min_size=1, max_size=max_connections, open=False,
                                         timeout=POOL_TIMEOUT_S, name="vitalrisk-gateway",
                                         kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S,
                                                 "application_name": "vitalrisk-gateway"})

    async def __aenter__(self) -> DeviceDirectory:
        await self._pool.open(wait=False)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._pool.close()

    async def lookup(self, token_id: str) -> DeviceCredential | None:
        """The credential with this token id, revoked or not; ``None`` if there is none.

        Raises
        ------
        SinkUnavailable
            The database does not answer within :data:`POOL_TIMEOUT_S` or the query fails.
        """
        try:
            async with self._pool.connection() as conn:
                cursor = await conn.execute("SELECT token_id, device_id, patient_id, token_sha256, "
                                            "revoked_at IS NOT NULL FROM gateway.devices WHERE token_id = %s",
                                            (token_id,))
                row = await cursor.fetchone()
        except (PoolTimeout, psycopg.Error) as exc:
            raise SinkUnavailable(f"device lookup failed: {first_line(exc)}") from None
        if row is None:
            return None
        return DeviceCredential(row[0], row[1], row[2], bytes(row[3]), bool(row[4]))

    async def touch(self, seen: Mapping[str, datetime]) -> None:
        """Set ``last_seen`` of each token id to its time (never backwards).

        Raises
        ------
        SinkUnavailable
            The update failed; the caller keeps the times for its next attempt.
        """
        if not seen:
            return
        try:
            async with self._pool.connection() as conn:
                await conn.execute("UPDATE gateway.devices AS d SET last_seen = v.seen "
                                   "FROM (SELECT unnest(%s::text[]) AS token_id, unnest(%s::timestamptz[]) AS seen) v "
                                   "WHERE d.token_id = v.token_id AND (d.last_seen IS NULL OR d.last_seen < v.seen)",
                                   (list(seen), list(seen.values())))
        except (PoolTimeout, psycopg.Error) as exc:
            raise SinkUnavailable(f"recording last_seen failed: {first_line(exc)}") from None
