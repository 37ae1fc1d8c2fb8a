"""Idempotent uploads: which messages the gateway has already had acknowledged, and their ``seq``.

A device that gets no answer (a timeout, a dropped connection, a 503) sends the same upload
again. The gateway accepts it once: each message of an upload has a key, and a message whose
key was acknowledged by the broker within the window is answered 202 again without being
produced again.

- A native ``vitalrisk.device/1`` message is keyed by its ``(device_id, seq)``, as the worker
  de-duplicates it.
- A FHIR or Open mHealth upload carries no sequence number, so its messages are keyed by a
  digest of their content (:func:`content_digest`: patient, device and readings, so the same
  Observations sent with other whitespace or key order are the same upload). The gateway also
  gives each one a ``seq`` for the wire (:func:`derived_seq`): the latest reading's time in the
  high bits, digest bits below. A retried identical upload gets the same ``seq`` (and the worker's
  ``(device, seq)`` window drops a copy that slipped through, after a gateway restart); a later
  upload gets a larger one, so the worker's window never takes it for an old resend.

:class:`RecentKeys` holds the acknowledged keys for ``window_s`` seconds, at most ``max_keys``
of them (the oldest go first): memory stays bounded whatever devices send. It is plain data
with the caller's clock.

Examples
--------
>>> keys = RecentKeys(window_s=60.0, max_keys=2)
>>> first = native_key("dev-1", 17)
>>> keys.seen(first, now_s=0.0)
False
>>> keys.add(first, now_s=0.0)
>>> keys.seen(first, now_s=59.0), keys.seen(first, now_s=61.0)
(True, False)
>>> readings = (("heart_rate", 1_767_571_200_000, 71.0),)
>>> digest = content_digest("pt-1", "dev-1", readings)
>>> content_key("dev-1", digest) == content_key("dev-1", content_digest("pt-1", "dev-1", readings))
True
>>> derived_seq(readings, digest) >> SEQ_DIGEST_BITS
1767571200000
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterable
from typing import NamedTuple

#: Low bits of a derived ``seq`` taken from the content digest (the rest is the latest reading's ms).
SEQ_DIGEST_BITS = 20
#: Latest reading time a derived ``seq`` can carry and stay a signed 64-bit integer (year 2248).
MAX_SEQ_TIME_MS = (1 << (63 - SEQ_DIGEST_BITS)) - 1


class MessageKey(NamedTuple):
    """What makes two uploaded messages the same: the device, and its ``seq`` or content digest."""

    device_id: str
    kind: str  # "seq" (native) or "sha256" (FHIR, Open mHealth)
    value: str


def native_key(device_id: str, seq: int) -> MessageKey:
    """The key of a native message: its device and sequence number."""
    return MessageKey(device_id, "seq", str(seq))


def content_key(device_id: str, digest: bytes) -> MessageKey:
    """The key of a FHIR or Open mHealth message: its device and content digest."""
    return MessageKey(device_id, "sha256", digest.hex())


def content_digest(patient_id: str, device_id: str, readings: Iterable[tuple[str, int, float]]) -> bytes:
    """SHA-256 over a message's patient, device and readings, in a canonical JSON form.

    Readings are sorted, so the order the entries of a Bundle came in does not matter.

    >>> a = content_digest("pt-1", "d", [("heart_rate", 2, 70.0), ("heart_rate", 1, 71.0)])
    >>> a == content_digest("pt-1", "d", [("heart_rate", 1, 71.0), ("heart_rate", 2, 70.0)])
    True
    >>> a == content_digest("pt-1", "d", [("heart_rate", 1, 71.5), ("heart_rate", 2, 70.0)])
    False
    """
    canonical = json.dumps([patient_id, device_id, sorted(readings)], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest()


def derived_seq(readings: Iterable[tuple[str, int, float]], digest: bytes) -> int:
    """A ``seq`` for a message that has none: latest reading ms, then :data:`SEQ_DIGEST_BITS` of digest.

    Two different messages share one only if their latest readings fall in the same
    millisecond and their digests agree in 20 bits (about one in a million); even then the worker
    would drop the second only while the first is among the device's 256 latest sequence numbers.

    >>> derived_seq([("heart_rate", 5, 70.0)], bytes(32)), derived_seq([("heart_rate", 5, 70.0)], b"\\xff" * 32)
    (5242880, 6291455)
    >>> derived_seq([], bytes(32))
    0
    """
    latest = max((t for _, t, _ in readings), default=0)
    low = int.from_bytes(digest[:4], "big") & ((1 << SEQ_DIGEST_BITS) - 1)
    return (min(max(latest, 0), MAX_SEQ_TIME_MS) << SEQ_DIGEST_BITS) | low


class RecentKeys:
    """Keys acknowledged within the last ``window_s`` seconds, at most ``max_keys`` of them.

    Parameters
    ----------
    window_s
        How long a key is remembered, seconds.
    max_keys
        Most keys held; when full, the oldest is forgotten first (a retry of it would then be
        produced again, and de-duplicated by the worker's ``(device, seq)`` window instead).
    """

    def __init__(self, *, window_s: float, max_keys: int) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be positive, got {window_s!r}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, got {max_keys!r}")
        self.window_s = float(window_s)
        self.max_keys = max_keys
        self._keys: OrderedDict[MessageKey, float] = OrderedDict()  # key -> when added, oldest first
        self.forgotten = 0  # keys dropped to stay within max_keys, before their window ended

    def __len__(self) -> int:
        return len(self._keys)

    def seen(self, key: MessageKey, now_s: float) -> bool:
        """Whether ``key`` was added within the window (expired keys are dropped first)."""
        self._expire(now_s)
        return key in self._keys

    def add(self, key: MessageKey, now_s: float) -> None:
        """Remember ``key`` as acknowledged at ``now_s``."""
        self._keys[key] = now_s
        self._keys.move_to_end(key)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)
            self.forgotten += 1

    def _expire(self, now_s: float) -> None:
        keys = self._keys
        horizon = now_s - self.window_s
        while keys:
            oldest, at_s = next(iter(keys.items()))
            if at_s > horizon:
                return
            del keys[oldest]
