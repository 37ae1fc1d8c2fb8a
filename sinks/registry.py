"""The model registry in PostgreSQL: one immutable row per model name and version.

Table ``model_registry`` (migration ``sinks/sql/0003_model_registry.sql``)::

    model_name text, model_version text, created_at timestamptz, examples_seen bigint,
    metrics jsonb, model bytea, model_sha256 text (checked by the database), registered_at

The registry stores bytes and knows nothing of what they hold: the trainer
(:mod:`models.trainer_service`) registers a snapshot's signed bytes
(:meth:`models.snapshots.Snapshot.to_bytes`) and, loading, checks the signature before anything
is unpickled (:meth:`~models.snapshots.Snapshot.from_bytes`). Here the SHA-256 is checked on
the way in (by the database) and on the way out. Registering the same (name, version) twice is
a no-op when the bytes are equal and an error otherwise: a published version never changes.
``model_version`` holds the decimal version; the newest is the latest ``created_at``, then the
highest version.

Synchronous psycopg: the trainer is a synchronous loop, and registers a few versions an hour.

Examples
--------
::

    with psycopg.connect(settings.database_url) as conn:
        register(conn, ModelVersion(name="risk-logreg", version=7, created_ms=..., examples_seen=1200,
                                    metrics={"auroc_any": 0.81}), blob)
        blob = load(conn, "risk-logreg")
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import TupleRow

from sinks.errors import RegistryError, SinkRejected
from sinks.rows import utc

TABLE = "model_registry"
_MISSING = (f"table {TABLE} is missing: apply the migrations (vitalrisk migrate; "
            "sinks/sql/0003_model_registry.sql)")
_VERSION_ORDER = "CASE WHEN model_version ~ '^[0-9]+$' THEN model_version::bigint END DESC NULLS LAST"
_COLUMNS = "model_name, model_version, (extract(epoch FROM created_at) * 1000)::bigint, examples_seen, metrics"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelVersion:
    """One registered version, as the registry describes it without its bytes.

    ``metrics`` are the model's figures when it was published (``None`` for a figure that was
    not a number); ``sha256`` is the hex SHA-256 of its bytes (empty before registration).
    """

    name: str
    version: int
    created_ms: int
    examples_seen: int
    metrics: Mapping[str, float | None] = field(default_factory=dict)
    sha256: str = ""

    @property
    def label(self) -> str:
        """``name-vVERSION``, as a score's ``model_version`` names it."""
        return f"{self.name}-v{self.version}"


def sha256_hex(blob: bytes) -> str:
    """Hex SHA-256 of a registered blob (the registry's integrity column).

    >>> sha256_hex(b"")[:12]
    'e3b0c44298fc'
    """
    return hashlib.sha256(blob).hexdigest()


def register(conn: psycopg.Connection[TupleRow], version: ModelVersion, blob: bytes) -> str:
    """Store ``blob`` as ``version`` (its ``sha256`` is ignored and computed); return the SHA-256.

    Raises
    ------
    RegistryError
        If the table is missing, or this name and version exist with other bytes.
    """
    digest = sha256_hex(blob)
    try:
        with conn.transaction():
            row = conn.execute(
                f"INSERT INTO {TABLE} (model_name, model_version, created_at, examples_seen, metrics, model, "  # noqa: S608 - TABLE is a constant
                "model_sha256) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (model_name, model_version) DO NOTHING RETURNING model_sha256",
                (version.name, str(version.version), utc(version.created_ms), version.examples_seen,
                 json.dumps(_json_metrics(version.metrics)), blob, digest)).fetchone()
            if row is None:
                existing = conn.execute(
                    f"SELECT model_sha256 FROM {TABLE} WHERE model_name = %s AND model_version = %s",  # noqa: S608 - TABLE is a constant
                    (version.name, str(version.version))).fetchone()
                if existing is None or existing[0] != digest:
                    raise RegistryError(f"{version.label} is already registered with other bytes; "
                                        "versions are immutable, publish a new version")
    except pg_errors.UndefinedTable:
        raise RegistryError(_MISSING) from None
    return digest


def load(conn: psycopg.Connection[TupleRow], name: str, version: int | None = None) -> bytes:
    """The bytes of the newest version of ``name`` (or of the given ``version``), SHA-256 checked.

    Raises
    ------
    RegistryError
        If the table is missing or there is no such version.
    SinkRejected
        If the stored bytes do not match their SHA-256.
    """
    try:
        with conn.transaction():  # a failed read leaves the connection usable
            if version is None:
                row = conn.execute(
                    f"SELECT model, model_sha256 FROM {TABLE} WHERE model_name = %s "  # noqa: S608 - constants only
                    f"ORDER BY created_at DESC, {_VERSION_ORDER} LIMIT 1", (name,)).fetchone()
            else:
                row = conn.execute(
                    f"SELECT model, model_sha256 FROM {TABLE} WHERE model_name = %s AND model_version = %s",  # noqa: S608 - TABLE is a constant
                    (name, str(version))).fetchone()
    except pg_errors.UndefinedTable:
        raise RegistryError(_MISSING) from None
    if row is None:
        raise RegistryError(f"no snapshot of {name!r}" + ("" if version is None else f" version {version}"))
    blob, digest = bytes(row[0]), str(row[1])
    if sha256_hex(blob) != digest:
        raise SinkRejected(f"registry row of {name!r} fails its SHA-256 check: not loaded")
    return blob


def versions(conn: psycopg.Connection[TupleRow], name: str) -> list[ModelVersion]:
    """Every registered version of ``name``, newest first, without loading any model."""
    try:
        with conn.transaction():
            rows = conn.execute(
                f"SELECT {_COLUMNS}, model_sha256 FROM {TABLE} "  # noqa: S608 - constants only
                f"WHERE model_name = %s ORDER BY created_at DESC, {_VERSION_ORDER}", (name,)).fetchall()
    except pg_errors.UndefinedTable:
        raise RegistryError(_MISSING) from None
    return [ModelVersion(name=str(r[0]), version=int(r[1]), created_ms=int(r[2]), examples_seen=int(r[3]),
                         metrics=dict(r[4]), sha256=str(r[5])) for r in rows]


def _json_metrics(metrics: Mapping[str, float | None]) -> dict[str, float | None]:
    """NaN (a figure with too few examples) as JSON null: jsonb has no NaN."""
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in metrics.items()}
