"""Records of the dead-letter topic (``vitalrisk.deadletter/2``), and what ops make of them.

A dead letter is the refused record itself, once: its own key and value bytes, unchanged, so it
can be replayed as it came; why it was refused travels in Kafka headers, each bounded::

    vitalrisk.schema    vitalrisk.deadletter/2
    vitalrisk.reason    the first (or only) reason, a short code (a metric label)
    vitalrisk.detail    one line: the rule and the offending value, at most 300 ASCII characters
    vitalrisk.counts    JSON {reason: n} of the refused readings (or {reason: 1} for the record)
    vitalrisk.accepted  readings of the record that were accepted (0: refused whole)
    vitalrisk.source    topic/partition/offset it was read from ("sink:<table>" for quarantined rows)
    vitalrisk.source_ms its record time, epoch ms
    vitalrisk.device_id, vitalrisk.patient_id   when the record named valid ones

So a dead letter is never more bytes than the record it refuses plus :data:`MAX_HEADER_BYTES`.
``vitalrisk deadletters replay`` marks what it sent back with a record of schema
``vitalrisk.deadletter-replayed/1`` (no value; header ``vitalrisk.replayed`` = partition/offset of
the dead letter), so a second replay skips it.

Examples
--------
>>> from kernel.events import DeadLetter
>>> letter = DeadLetter(reason="impossible_value", detail="reading 1: heart_rate must lie in [20, 300]", payload=b'{"x":1}',
...                     reasons={"impossible_value": 1}, accepted=4, device_id="dev-1", patient_id="pt-1")
>>> headers = deadletter_headers(letter, topic="vitals.readings", partition=2, offset=9, record_ts_ms=5)
>>> record = DeadLetterRecord.from_kafka(0, 17, 1_000, b"pt-1", b'{"x":1}', headers)
>>> record.reason, record.counts, record.source, record.patient_id, record.replayable
('impossible_value', {'impossible_value': 1}, ('vitals.readings', 2, 9), 'pt-1', False)
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from kernel.events import DeadLetter
from kernel.limits import valid_id

SCHEMA = "vitalrisk.deadletter/2"
REPLAYED_SCHEMA = "vitalrisk.deadletter-replayed/1"
#: Longest detail a dead letter carries, characters.
DETAIL_CHARS = 300
#: Bound on a dead letter's header bytes (names and values): what it adds to the refused record.
MAX_HEADER_BYTES = 1_024
#: Sources that are not a topic a record can go back to.
SINK_SOURCE_PREFIX = "sink:"
_P = "vitalrisk."


def as_bytes(raw: object) -> bytes:
    """A record value as bytes for its dead letter: ``b""`` for a tombstone or a non-bytes value.

    >>> as_bytes(None), as_bytes(bytearray(b"x")), as_bytes("text")
    (b'', b'x', b'')
    """
    return bytes(raw) if isinstance(raw, (bytes, bytearray, memoryview)) else b""


def deadletter_headers(letter: DeadLetter, *, topic: str, partition: int, offset: int,
                       record_ts_ms: int | None, replay_of: bytes | None = None) -> list[tuple[str, bytes]]:
    """The Kafka headers of ``letter``'s record (its key and value are the refused record's own)."""
    counts = {reason[:64]: n for reason, n in list(letter.counts.items())[:16]}
    headers = [
        (_P + "schema", SCHEMA.encode()),
        (_P + "reason", letter.reason[:64].encode("ascii", "replace")),
        (_P + "detail", letter.detail.encode("ascii", "backslashreplace")[:DETAIL_CHARS]),
        (_P + "counts", json.dumps(counts, separators=(",", ":"), ensure_ascii=True).encode()),
        (_P + "accepted", str(letter.accepted).encode()),
        (_P + "source", f"{topic[:200]}/{partition}/{offset}".encode("ascii", "replace")),
    ]
    if record_ts_ms is not None:
        headers.append((_P + "source_ms", str(record_ts_ms).encode()))
    for name, value in (("device_id", letter.device_id), ("patient_id", letter.patient_id)):
        if value is not None and valid_id(value):
            headers.append((_P + name, value.encode()))
    if replay_of is not None and _position(replay_of.decode("ascii", "replace")) is not None:
        headers.append((_P + "replay_of", replay_of))  # refused again after a replay: not replayed again
    return headers


def replay_of(headers: object) -> bytes | None:
    """The ``vitalrisk.replay_of`` header of a record that ``vitalrisk deadletters replay`` sent."""
    for item in headers if isinstance(headers, (list, tuple)) else ():
        if isinstance(item, tuple) and len(item) == 2 and item[0] == _P + "replay_of" and isinstance(item[1], bytes):
            return item[1][:40]
    return None


def replayed_headers(partition: int, offset: int) -> list[tuple[str, bytes]]:
    """Headers of the marker saying the dead letter at ``partition``/``offset`` was replayed."""
    return [(_P + "schema", REPLAYED_SCHEMA.encode()), (_P + "replayed", f"{partition}/{offset}".encode())]


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """One dead letter as read back from the topic: where it is, why, and the refused bytes.

    :meth:`from_kafka` is total: headers that are missing or garbled give ``reason`` ``"unknown"``
    and empty fields, never an exception.
    """

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    reason: str = "unknown"
    detail: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    accepted: int = 0
    source: tuple[str, int, int] | None = None
    source_ms: int | None = None
    device_id: str | None = None
    patient_id: str | None = None
    replayed: tuple[int, int] | None = None  # set on a replay marker: the dead letter it marks
    replay_of: tuple[int, int] | None = None  # set when the refused record was itself a replay

    @classmethod
    def from_kafka(cls, partition: int, offset: int, timestamp_ms: int, key: bytes | None, value: bytes | None,
                   headers: Sequence[tuple[str, bytes | None]] | None) -> DeadLetterRecord:
        found = {}
        for name, raw in headers or ():
            if isinstance(name, str) and name.startswith(_P) and isinstance(raw, bytes):
                found[name[len(_P):]] = raw.decode("utf-8", "replace")
        body = value if isinstance(value, bytes) else b""
        replayed = _position(found.get("replayed", "")) if found.get("schema") == REPLAYED_SCHEMA else None
        try:
            counts = {str(k): int(v) for k, v in json.loads(found.get("counts", "{}")).items()}
        except (ValueError, TypeError, AttributeError, RecursionError):
            counts = {}
        source = found.get("source", "")
        parts = source.rsplit("/", 2)
        where = (parts[0], int(parts[1]), int(parts[2])) if len(parts) == 3 and parts[1].isdigit() \
            and parts[2].isdigit() else None
        return cls(partition, offset, timestamp_ms, key, body, reason=found.get("reason", "unknown"),
                   detail=found.get("detail", ""), counts=counts or {found.get("reason", "unknown"): 1},
                   accepted=_int(found.get("accepted")) or 0, source=where, source_ms=_int(found.get("source_ms")),
                   device_id=_id(found.get("device_id")), patient_id=_id(found.get("patient_id")),
                   replayed=replayed, replay_of=_position(found.get("replay_of", "")))

    @property
    def replayable(self) -> bool:
        """Whether replaying it cannot duplicate anything: refused whole (no reading of it was
        accepted), read from a topic (not a quarantined database row), with bytes to send."""
        return (self.replayed is None and self.replay_of is None and self.accepted == 0 and bool(self.value) and self.source is not None
                and not self.source[0].startswith(SINK_SOURCE_PREFIX))

    def as_json(self) -> dict[str, object]:
        """The record for ``--json`` output (the value's size, not its bytes)."""
        return {"partition": self.partition, "offset": self.offset, "time": iso(self.timestamp_ms),
                "reason": self.reason, "detail": self.detail, "counts": self.counts, "accepted": self.accepted,
                "source": None if self.source is None else "/".join(map(str, self.source)),
                "device_id": self.device_id, "patient_id": self.patient_id, "bytes": len(self.value),
                "replayable": self.replayable}


def summarise(records: Iterable[DeadLetterRecord], by: str) -> list[tuple[str, int, int]]:
    """``(group, dead letters, refusals)`` by ``reason``, ``device``, ``patient`` or ``hour``,
    most dead letters first. ``reason`` counts each refused reading under its own reason.

    >>> r = [DeadLetterRecord(0, i, 3_600_000 * i, None, b"x", reason="late", counts={"late": 2, "wrong_unit": 1})
    ...      for i in range(2)]
    >>> summarise(r, "reason"), summarise(r, "hour")[0]
    ([('late', 2, 4), ('wrong_unit', 2, 2)], ('1970-01-01T00:00Z', 1, 3))
    """
    letters: Counter[str] = Counter()
    refusals: Counter[str] = Counter()
    for record in records:
        if record.replayed is not None:
            continue
        if by == "reason":
            for reason, n in record.counts.items():
                letters[reason] += 1
                refusals[reason] += n
            continue
        if by == "device":
            group = record.device_id or "(none)"
        elif by == "patient":
            group = record.patient_id or "(none)"
        elif by == "hour":
            group = iso(record.timestamp_ms - record.timestamp_ms % 3_600_000)[:-4] + "Z"
        else:
            raise ValueError(f"summarise by reason, device, patient or hour, not {by!r}")
        letters[group] += 1
        refusals[group] += sum(record.counts.values())
    return sorted(((g, n, refusals[g]) for g, n in letters.items()), key=lambda row: (-row[1], row[0]))


def iso(ms: int) -> str:
    """Epoch ms as ISO-8601 UTC to the second.

    >>> iso(1_767_571_200_000)
    '2026-01-05T00:00:00Z'
    """
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _position(text: str) -> tuple[int, int] | None:
    partition, _, offset = text.partition("/")
    return (int(partition), int(offset)) if partition.isdigit() and offset.isdigit() else None


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() and len(text) < 20 else None


def _id(text: str | None) -> str | None:
    return text if text is not None and valid_id(text) else None
