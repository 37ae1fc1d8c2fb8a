"""HMAC signatures of webhook requests: what the sender adds, and what a receiver checks.

Signature scheme (``X-Vitalrisk-Signature``)
    ::

        X-Vitalrisk-Timestamp: <unix seconds>
        X-Vitalrisk-Signature: t=<unix seconds>,v2=<hex HMAC-SHA256(secret, "<t>.<idempotency key>." + body)>
        Idempotency-Key: <notification id>

    The HMAC covers the decimal timestamp, a dot, the idempotency key, a dot, and the exact body
    bytes. A receiver recomputes it with the shared secret, compares in constant time, and rejects
    a timestamp more than 5 minutes from its clock (replays). Several ``v2=`` entries may appear
    (secret rotation); one match suffices. Every attempt is signed afresh (:mod:`sinks.webhook`),
    so a page retried for minutes is never stale. ``Idempotency-Key`` is the same on every attempt
    and every replay of the same page: receivers drop the copies. Because the key is signed, no one
    without the secret can replay a page under a fresh key to page again, nor give a new page a
    delivered page's key to have it dropped. (``v1=``, which signed the body alone, is no longer
    sent or accepted.) Every part of the header is checked before it is used: a malformed one is
    refused as ``malformed``, whatever its bytes.

Pure functions of their arguments (the clock comes in as ``now_s``): the sender and the pager
simulator (:mod:`simulators.pager`, a receiver) share them.

Examples
--------
>>> header = sign(b"k", b'{"a":1}', 1_700_000_000, "al-1:firing")
>>> header
't=1700000000,v2=79babe541e2a41fdcf09505c551b7d07d1159da3ff312174834b589d42580a1a'
>>> verify([b"k"], b'{"a":1}', header, "1700000000", "al-1:firing", now_s=1_700_000_060)
1700000000
>>> verify([b"k"], b'{"a":2}', header, "1700000000", "al-1:firing", now_s=1_700_000_060)
Traceback (most recent call last):
...
kernel.errors.SignatureInvalid: mismatch: no v2 signature matches the idempotency key and body
>>> verify([b"k"], b'{"a":1}', header, "1700000000", "al-2:firing", now_s=1_700_000_060)
Traceback (most recent call last):
...
kernel.errors.SignatureInvalid: mismatch: no v2 signature matches the idempotency key and body
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence

from kernel.errors import SignatureInvalid

SIGNATURE_HEADER = "X-Vitalrisk-Signature"
TIMESTAMP_HEADER = "X-Vitalrisk-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: Signatures older or newer than this (seconds) are rejected as replays.
SIGNATURE_TOLERANCE_S = 300
#: The scheme's version tag: the HMAC covers timestamp, idempotency key and body.
SCHEME = "v2"
#: Longest idempotency key signed or accepted (ours are ``<alert id>:<event>``, under 100 characters).
MAX_KEY_CHARS = 200
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")


def sign(secret: bytes, body: bytes, timestamp_s: int, idempotency_key: str) -> str:
    """The ``X-Vitalrisk-Signature`` value for ``body`` sent at ``timestamp_s`` under ``idempotency_key``."""
    return f"t={timestamp_s},{SCHEME}={_digest(secret, timestamp_s, idempotency_key, body)}"


def verify(secrets: Sequence[bytes], body: bytes, signature: str | None, timestamp: str | None,
           idempotency_key: str | None, *, now_s: float, tolerance_s: float = SIGNATURE_TOLERANCE_S) -> int:
    """Check a request's signature; return its timestamp.

    Parameters
    ----------
    secrets
        Accepted secrets (more than one while a secret is being rotated).
    body
        The raw request body.
    signature, timestamp, idempotency_key
        The ``X-Vitalrisk-Signature``, ``X-Vitalrisk-Timestamp`` and ``Idempotency-Key`` header
        values (``None`` if absent).
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
    >>> verify([b"k"], b"{}", sign(b"k", b"{}", 100, "n-1"), "100", "n-1", now_s=1_000)
    Traceback (most recent call last):
    ...
    kernel.errors.SignatureInvalid: stale: timestamp 100 is 900 s from now (limit 300 s)
    >>> verify([b"k"], b"{}", "t=100,v2=\u00e9\u00e9", "100", "n-1", now_s=100)
    Traceback (most recent call last):
    ...
    kernel.errors.SignatureInvalid: malformed: X-Vitalrisk-Signature's v2= must be 64 lower-case hex digits
    """
    if not signature or not timestamp or not idempotency_key:
        raise SignatureInvalid("missing", f"{SIGNATURE_HEADER}, {TIMESTAMP_HEADER} and {IDEMPOTENCY_HEADER} "
                                          "are required")
    if len(idempotency_key) > MAX_KEY_CHARS or not idempotency_key.isprintable() or not idempotency_key.isascii():
        raise SignatureInvalid("malformed", f"{IDEMPOTENCY_HEADER} must be at most {MAX_KEY_CHARS} printable "
                                            "ASCII characters")
    parts: dict[str, list[str]] = {}
    for item in signature.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise SignatureInvalid("malformed", f"{SIGNATURE_HEADER} must be t=<unix>,{SCHEME}=<hex>")
        parts.setdefault(key, []).append(value)
    stamps = parts.get("t", [])
    if len(stamps) != 1 or not _UNIX_SECONDS.fullmatch(stamps[0]):
        raise SignatureInvalid("malformed", f"{SIGNATURE_HEADER} needs one integer t=")
    t = int(stamps[0])
    if timestamp.strip() != str(t):
        raise SignatureInvalid("malformed", f"{TIMESTAMP_HEADER} differs from t= ({t})")
    candidates = parts.get(SCHEME, [])
    if not candidates:
        raise SignatureInvalid("malformed", f"{SIGNATURE_HEADER} has no {SCHEME}= signature")
    # compare_digest refuses non-ASCII str (TypeError): check the form before comparing.
    if not all(_HEX_DIGEST.fullmatch(c) for c in candidates):
        raise SignatureInvalid("malformed", f"{SIGNATURE_HEADER}'s {SCHEME}= must be 64 lower-case hex digits")
    if abs(now_s - t) > tolerance_s:
        raise SignatureInvalid("stale", f"timestamp {t} is {abs(now_s - t):.0f} s from now "
                                        f"(limit {tolerance_s:.0f} s)")
    for secret in secrets:
        expected = _digest(secret, t, idempotency_key, body)
        if any(hmac.compare_digest(expected, c) for c in candidates):
            return t
    raise SignatureInvalid("mismatch", f"no {SCHEME} signature matches the idempotency key and body")


def signed_headers(secret: bytes, body: bytes, notification_id: str, *, now_s: float) -> dict[str, str]:
    """All headers of one attempt: content type, timestamp, signature, idempotency key.

    >>> sorted(signed_headers(b"k", b"{}", "al-1:firing", now_s=5.9))
    ['Content-Type', 'Idempotency-Key', 'X-Vitalrisk-Signature', 'X-Vitalrisk-Timestamp']
    """
    t = int(now_s)
    return {"Content-Type": "application/json", TIMESTAMP_HEADER: str(t),
            SIGNATURE_HEADER: sign(secret, body, t, notification_id), IDEMPOTENCY_HEADER: notification_id}


def _digest(secret: bytes, timestamp_s: int, idempotency_key: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp_s>.<idempotency_key>." + body``."""
    return hmac.new(secret, f"{timestamp_s}.{idempotency_key}.".encode() + body, hashlib.sha256).hexdigest()
