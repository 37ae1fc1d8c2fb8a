"""Versioned, signed model snapshots: the River model plus what it is and how well it does.

A :class:`Snapshot` is what the trainer publishes and every scorer hot-swaps to: the model, its
name and version, when it was taken (event time), how many labelled windows it had learned
from, and its prequential metrics at that moment.

**Format and trust.** River models are Python objects; the only general way to persist them is
pickle, and unpickling runs code chosen by whoever wrote the bytes. So snapshot bytes are
``MAGIC || HMAC-SHA256(key, MAGIC || payload) || payload`` and :meth:`Snapshot.from_bytes`
checks the signature, in constant time, *before* it unpickles anything: bytes not signed with
the deployment's ``snapshot_key`` (``VITALS_SNAPSHOT_KEY``, at least 32 characters) are
rejected unread. The key is the trust boundary — anyone who holds it can make the scorers run
code — so keep it with the trainer and scorers only, never load snapshots from an untrusted
source, and rotate it like any other secret (old snapshots then stop loading, by design).

Examples
--------
>>> from models.risk import RiskModel
>>> snap = Snapshot("risk-logreg", 3, created_at_ms=1_767_571_200_000, examples_seen=10,
...                 metrics={"auroc_any": 0.8}, model=RiskModel(conditions=("any",)))
>>> key = "k" * 32
>>> raw = snap.to_bytes(key)
>>> back = Snapshot.from_bytes(raw, key)
>>> back.label, back.metrics
('risk-logreg-v3', {'auroc_any': 0.8})
>>> Snapshot.from_bytes(raw[:-1] + b"x", key)
Traceback (most recent call last):
...
models.errors.SnapshotRejected: snapshot signature does not match: not written with this key, or altered
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from models.errors import SnapshotKeyMissing, SnapshotRejected

#: First bytes of every snapshot (format version 1).
MAGIC = b"VRSNAP1\x00"
#: Shortest accepted key, in bytes (UTF-8).
MIN_KEY_BYTES = 32
_MAC_BYTES = hashlib.sha256().digest_size
_FORMAT = 1

Key = str | bytes | SecretStr


def signing_key(key: Key | None) -> bytes:
    """The key as bytes, or :class:`SnapshotKeyMissing` if it is absent or too short.

    Pass ``settings.snapshot_key``.

    >>> signing_key(None)
    Traceback (most recent call last):
    ...
    models.errors.SnapshotKeyMissing: no snapshot key: set VITALS_SNAPSHOT_KEY (at least 32 characters)
    """
    if isinstance(key, SecretStr):
        key = key.get_secret_value()
    if key is None:
        raise SnapshotKeyMissing(f"no snapshot key: set VITALS_SNAPSHOT_KEY (at least {MIN_KEY_BYTES} characters)")
    raw = key.encode() if isinstance(key, str) else bytes(key)
    if len(raw) < MIN_KEY_BYTES:
        raise SnapshotKeyMissing(f"snapshot key must be at least {MIN_KEY_BYTES} bytes, got {len(raw)}")
    return raw


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One published version of a model.

    Parameters
    ----------
    name
        Model name, e.g. ``"risk-logreg"``; versions count per name.
    version
        Positive, increasing per name; a scorer only swaps to a higher one.
    created_at_ms
        Event time at which it was taken (the trainer's clock), epoch ms.
    examples_seen
        Labelled windows the model had been offered (learned or sampled away).
    metrics
        Prequential metrics when it was taken, e.g. ``{"auroc_any": 0.83}``.
    model
        The River model (a :class:`models.risk.RiskModel`).
    resume
        Where the trainer that took it resumes from (see :mod:`models.trainer_service`): input
        positions and the event time through which windows were learned. Empty elsewhere.
    """

    name: str
    version: int
    created_at_ms: int
    examples_seen: int
    metrics: dict[str, float | None]
    model: Any = field(repr=False)
    resume: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a snapshot needs a name")
        if self.version < 0:
            raise ValueError(f"version must be >= 0, got {self.version}")

    @property
    def label(self) -> str:
        """``name-vVERSION``: what a score's ``model_version`` names."""
        return f"{self.name}-v{self.version}"

    def to_bytes(self, key: Key | None) -> bytes:
        """Signed bytes for a compacted topic or the registry.

        Raises
        ------
        SnapshotKeyMissing
            If ``key`` is absent or shorter than :data:`MIN_KEY_BYTES`.
        """
        secret = signing_key(key)
        payload = pickle.dumps({
            "format": _FORMAT, "name": self.name, "version": self.version, "created_at_ms": self.created_at_ms,
            "examples_seen": self.examples_seen, "metrics": dict(self.metrics), "model": self.model,
            "resume": dict(self.resume),
        }, protocol=pickle.HIGHEST_PROTOCOL)
        mac = hmac.new(secret, MAGIC + payload, hashlib.sha256).digest()
        return MAGIC + mac + payload

    @classmethod
    def from_bytes(cls, raw: bytes, key: Key | None) -> Snapshot:
        """Verify the signature, then (only then) unpickle.

        Raises
        ------
        SnapshotKeyMissing
            If ``key`` is absent or too short.
        SnapshotRejected
            If ``raw`` is not a snapshot, its signature does not match, or its payload is malformed.
        """
        secret = signing_key(key)
        head = len(MAGIC) + _MAC_BYTES
        if not isinstance(raw, (bytes, bytearray)) or len(raw) <= head or not raw.startswith(MAGIC):
            raise SnapshotRejected("not a vitalrisk snapshot (bad magic or too short)")
        mac, payload = raw[len(MAGIC):head], raw[head:]
        expected = hmac.new(secret, MAGIC + payload, hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected):
            raise SnapshotRejected("snapshot signature does not match: not written with this key, or altered")
        try:
            body = pickle.loads(payload)  # noqa: S301 - authenticated above
            if not isinstance(body, dict) or body.get("format") != _FORMAT:
                raise SnapshotRejected(f"unsupported snapshot format {body.get('format')!r}")
            return cls(str(body["name"]), int(body["version"]), int(body["created_at_ms"]),
                       int(body["examples_seen"]), dict(body["metrics"]), body["model"],
                       dict(body.get("resume", {})))
        except SnapshotRejected:
            raise
        except Exception as exc:  # noqa: BLE001 - authenticated, but a writer's bug must not crash a reader
            raise SnapshotRejected(f"snapshot payload is malformed ({type(exc).__name__})") from None
