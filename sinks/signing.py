"""HMAC signatures of webhook requests: what the sender adds, and what a receiver checks.

Signature scheme (``X-Vitalrisk-Signature``)
    ::

        X-Vitalrisk-Timestamp: <unix seconds>
        X-Vitalrisk-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>
        Idempotency-Key: <notification id>

    The HMAC covers the decimal timestamp, a dot, and the exact body bytes. A receiver
    recomputes it with the shared secret, compares in constant time, and rejects a timestamp more
    than 5 minutes from its clock (replays). Several ``v1=`` entries may appear (secret
    rotation); one match suffices. Every attempt is signed afresh (:mod:`sinks.webhook`), so a
    page retried for minutes is never stale. ``Idempotency-Key`` is the same on every attempt and
    every replay of the same page: receivers drop the copies.

Pure functions of their arguments (the clock comes in as ``now_s``): the sender and the pager
simulator (:mod:`simulators.pager`, a receiver) share them.

Examples
--------
>>> header = sign(b"k", b'{"a":1}', 1_700_000_000)
>>> header
't=1700000000,v1=1b6ad1bc9bf48c52ce01939866d5877c6cc4e87ddad27e16673cb8c4964394a3'
>>> verify([b"k"], b'{"a":1}', header, "1700000000", now_s=1_700_000_060)
1700000000
>>> verify([b"k"], b'{"a":2}', header, "1700000000", now_s=1_700_000_060)
Traceback (most recent call last):
...
kernel.errors.SignatureInvalid: mismatch: no v1 signature matches the body
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from kernel.errors import SignatureInvalid

SIGNATURE_HEADER = "X-Vitalrisk-Signature"
TIMESTAMP_HEADER = "X-Vitalrisk-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: Signatures older or newer than this (seconds) are rejected as replays.
SIGNATURE_TOLERANCE_S = 300


def sign(secret: bytes, body: bytes, timestamp_s: int) -> str:
    """The ``X-Vitalrisk-Signature`` value for ``body`` sent at ``timestamp_s``."""
    return f"t={timestamp_s},v1={_digest(secret, timestamp_s, body)}"


def verify(secrets: Sequence[bytes], body: bytes, signature: str | None, timestamp: str | None, *,
           now_s: float, tolerance_s: float = SIGNATURE_TOLERANCE_S) -> int:
    """Check a request's signature; return its timestamp.

    Parameters
    ----------
    secrets
        Accepted secrets (more than one while a secret is being rotated).
    body
        The raw request body.
    signature, timestamp
        The ``X-Vitalrisk-Signature`` and ``X-Vitalrisk-Timestamp`` header values (``None`` if absent).
    now_s
        The receiver's clock, unix seconds.
    tolerance_s
        Largest accepted distance between ``t`` and ``now_s``.

    Raises
    ------
    SignatureInvalid
        ``missing`` header, ``malformed`` value, ``stale`` timestamp, or ``mismatch``.

    Examples
    --------
    >>> verify([b"k"], b"{}", sign(b"k", b"{}", 100), "100", now_s=1_000)
    Traceback (most recent call last):
    ...
    kernel.errors.SignatureInvalid: stale: timestamp 100 is 900 s from now (limit 300 s)
    """
    if not signature or not timestamp:
        raise SignatureInvalid("missing", f"{SIGNATURE_HEADER} and {TIMESTAMP_HEADER} are required")
    parts: dict[str, list[str]] = {}
    for item in signature.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise SignatureInvalid("malformed", f"{SIGNATURE_HEADER} must be t=<unix>,v1=<hex>")
        parts.setdefault(key, []).append(value)
    try:
        t = int(parts["t"][0])
    except (KeyError, ValueError):
        raise SignatureInvalid("malformed", f"{SIGNATURE_HEADER} needs an integer t=") from None
    if timestamp.strip() != str(t):
        raise SignatureInvalid("malformed", f"{TIMESTAMP_HEADER} ({timestamp}) differs from t= ({t})")
    if abs(now_s - t) > tolerance_s:
        raise SignatureInvalid("stale", f"timestamp {t} is {abs(now_s - t):.0f} s from now "
                                        f"(limit {tolerance_s:.0f} s)")
    candidates = parts.get("v1", [])
    for secret in secrets:
        expected = _digest(secret, t, body)
        if any(hmac.compare_digest(expected, c) for c in candidates):
            return t
    raise SignatureInvalid("mismatch", "no v1 signature matches the body")


def signed_headers(secret: bytes, body: bytes, notification_id: str, *, now_s: float) -> dict[str, str]:
    """All headers of one attempt: content type, timestamp, signature, idempotency key.

    >>> sorted(signed_headers(b"k", b"{}", "al-1:firing", now_s=5.9))
    ['Content-Type', 'Idempotency-Key', 'X-Vitalrisk-Signature', 'X-Vitalrisk-Timestamp']
    """
    t = int(now_s)
    return {"Content-Type": "application/json", TIMESTAMP_HEADER: str(t), SIGNATURE_HEADER: sign(secret, body, t),
            IDEMPOTENCY_HEADER: notification_id}


def _digest(secret: bytes, timestamp_s: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp_s>." + body``."""
    return hmac.new(secret, f"{timestamp_s}.".encode() + body, hashlib.sha256).hexdigest()
