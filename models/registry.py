"""The model registry in PostgreSQL: signed snapshots, one immutable row per name and version.

Adapter module (psycopg I/O); the rest of ``models`` stays pure. Table ``model_registry``
(migration ``sinks/sql/0003_model_registry.sql``)::

    model_name text, model_version text, created_at timestamptz, examples_seen bigint,
    metrics jsonb, model bytea, model_sha256 text (checked by the database), registered_at

``model`` holds :meth:`Snapshot.to_bytes` — signed — and ``model_version`` the decimal version.
Loading checks the SHA-256 and then the HMAC signature before anything is unpickled
(:meth:`Snapshot.from_bytes`): a row written without the key is refused, whoever could insert it.
Registering the same (name, version) twice is a no-op when the bytes are equal and an error
otherwise: a published version never changes.

Examples
--------
::

    with psycopg.connect(settings.database_url) as conn:
        register(conn, snapshot, settings.snapshot_key)
        latest = load(conn, "risk-logreg", settings.snapshot_key)
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from models.errors import RegistryError, SnapshotRejected
from models.snapshots import Key, Snapshot, sha256_hex

TABLE = "model_registry"
_MISSING = (f"table {TABLE} is missing: apply the migrations (vitalrisk migrate; "
            "sinks/sql/0003_model_registry.sql)")
_VERSION_ORDER = "CASE WHEN model_version ~ '^[0-9]+$' THEN model_version::bigint END DESC NULLS LAST"


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """A registry row without its blob."""

    name: str
    version: int
    created_at: dt.datetime
    examples_seen: int
    metrics: dict[str, Any]
    sha256: str


def register(conn: psycopg.Connection[Any], snapshot: Snapshot, key: Key | None) -> str:
    """Store a snapshot (signed with ``key``); return its SHA-256.

    Raises
    ------
    RegistryError
        If the table is missing, or this name and version exist with other bytes.
    SnapshotKeyMissing
        If ``key`` is absent or too short.
    """
    raw = snapshot.to_bytes(key)
    digest = sha256_hex(raw)
    created = dt.datetime.fromtimestamp(snapshot.created_at_ms / 1000, dt.timezone.utc)
    try:
        with conn.transaction():
            row = conn.execute(
                f"INSERT INTO {TABLE} (model_name, model_version, created_at, examples_seen, metrics, model, "
                "model_sha256) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (model_name, model_version) DO NOTHING RETURNING model_sha256",
                (snapshot.name, str(snapshot.version), created, snapshot.examples_seen,
                 json.dumps(_json_metrics(snapshot.metrics)), raw, digest)).fetchone()
            if row is None:
                existing = conn.execute(
                    f"SELECT model_sha256 FROM {TABLE} WHERE model_name = %s AND model_version = %s",
                    (snapshot.name, str(snapshot.version))).fetchone()
                if existing is None or existing[0] != digest:
                    raise RegistryError(f"{snapshot.label} is already registered with other bytes; "
                                        "versions are immutable, publish a new version")
    except pg_errors.UndefinedTable:
        raise RegistryError(_MISSING) from None
    return digest


def load(conn: psycopg.Connection[Any], name: str, key: Key | None, version: int | None = None) -> Snapshot:
    """The newest snapshot of ``name`` (or the given ``version``), verified before unpickling.

    Raises
    ------
    RegistryError
        If the table is missing or there is no such snapshot.
    SnapshotRejected
        If the bytes fail the SHA-256 or the signature check.
    """
    try:
        if version is None:
            row = conn.execute(
                f"SELECT model, model_sha256 FROM {TABLE} WHERE model_name = %s "
                f"ORDER BY created_at DESC, {_VERSION_ORDER} LIMIT 1", (name,)).fetchone()
        else:
            row = conn.execute(
                f"SELECT model, model_sha256 FROM {TABLE} WHERE model_name = %s AND model_version = %s",
                (name, str(version))).fetchone()
    except pg_errors.UndefinedTable:
        raise RegistryError(_MISSING) from None
    if row is None:
        raise RegistryError(f"no snapshot of {name!r}" + ("" if version is None else f" version {version}"))
    raw, digest = bytes(row[0]), row[1]
    if sha256_hex(raw) != digest:
        raise SnapshotRejected(f"registry row of {name!r} fails its SHA-256 check")
    return Snapshot.from_bytes(raw, key)


def versions(conn: psycopg.Connection[Any], name: str) -> list[SnapshotInfo]:
    """Every registered version of ``name``, newest first, without loading any model."""
    try:
        rows = conn.execute(
            f"SELECT model_name, model_version, created_at, examples_seen, metrics, model_sha256 FROM {TABLE} "
            f"WHERE model_name = %s ORDER BY created_at DESC, {_VERSION_ORDER}", (name,)).fetchall()
    except pg_errors.UndefinedTable:
        raise RegistryError(_MISSING) from None
    return [SnapshotInfo(r[0], int(r[1]), r[2], int(r[3]), dict(r[4]), r[5]) for r in rows]


def _json_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in metrics.items()}
