"""The native format: ``vitalrisk.device/1`` messages, one or a JSON array of them, read by the worker's own decoder.

Each message is decoded by :func:`kernel.wire.decode_device_message` within the configured
:class:`~kernel.limits.Limits`: the one definition of the fields, their limits and the id rule, so
the gateway accepts exactly what the worker would. Unlike the worker, which keeps a message's
good readings and dead-letters the others, the gateway refuses the whole upload when any reading
is invalid (422, one issue per reading, ``$[i].readings[j]``): the sender is there to fix and
resend it, and nothing partial is acknowledged. A message whose envelope cannot be read (no
``seq``, a ``patient_id`` of the wrong type) is a 400; an id that breaks the id rule, a ``seq``
out of range or too many readings a 422.

Examples
--------
>>> from kernel.limits import Limits
>>> from kernel.wire import encode_device_message
>>> raw = encode_device_message(device_id="dev-1", patient_id="pt-1", seq=7, sent_at=2_000,
...                             readings=[("heart_rate", 1_000, 71.0)])
>>> parse_native(json.loads(raw), raw, Limits())
(ParsedMessage(patient_id='pt-1', device_id='dev-1', seq=7, readings=(('heart_rate', 1000, 71.0),)),)
>>> bad = encode_device_message(device_id="dev-1", patient_id="pt-1", seq=8, sent_at=2_000,
...                             readings=[("heart_rate", 1_000, 71.0), ("heart_rate", 2_000, 400.0)])
>>> parse_native([json.loads(raw), json.loads(bad)], b"", Limits())
Traceback (most recent call last):
...
gateway.outcome.UploadRefused: impossible_value: reading 1: heart_rate must lie in [20, 300] beats/min, got 400 (at $[1].readings[1])
"""

from __future__ import annotations

import json
import re

from kernel.errors import InvalidMessage
from kernel.limits import ID_PATTERN, Limits
from kernel.wire import decode_device_message

from gateway.outcome import Issue, Status, UploadRefused, combine, refuse
from gateway.parsed import ParsedMessage

#: Envelope reasons of kernel.wire that are a readable message breaking a rule (422), not a broken one (400).
_RULE_REASONS = frozenset({"invalid_id", "impossible_value", "too_many_readings", "too_large"})
_FIELD = re.compile(r"field '(\w+)'")


def parse_native(document: object, body: bytes, limits: Limits) -> tuple[ParsedMessage, ...]:
    """The messages of a native upload: ``document`` is its parsed JSON, ``body`` its bytes.

    A single message is decoded from ``body`` itself; the messages of an array are written back
    to JSON one by one (the decoder reads bytes). :class:`~gateway.outcome.UploadRefused` names
    every message and reading at fault.
    """
    if isinstance(document, list):
        if not document:
            raise refuse(422, "empty_batch", "the array holds no message", "$")
        # ASCII escapes: a lone surrogate (JSON "\ud800") has no UTF-8, and valid messages are ASCII anyway
        items = [(f"$[{i}]", json.dumps(item, separators=(",", ":")).encode()) for i, item in enumerate(document)]
    else:
        items = [("$", body)]
    messages: list[ParsedMessage] = []
    refusals: list[UploadRefused] = []
    for where, raw in items:
        try:
            messages.append(_message(raw, where, limits))
        except UploadRefused as refused:
            refusals.append(refused)
    if refusals:
        raise combine(refusals)
    return tuple(messages)


def _message(raw: bytes, where: str, limits: Limits) -> ParsedMessage:
    try:
        batch = decode_device_message(raw, limits=limits)
    except InvalidMessage as exc:
        raise _envelope_refusal(exc, where) from None
    if batch.rejected:
        raise UploadRefused(422, [Issue(r.reason, f"reading {r.index}: {r.detail}", f"{where}.readings[{r.index}]")
                                  for r in batch.rejected])
    return ParsedMessage(patient_id=batch.patient_id, device_id=batch.device_id, seq=batch.seq,
                         readings=tuple(batch.points))


def _envelope_refusal(exc: InvalidMessage, where: str) -> UploadRefused:
    """A decoder's refusal of a whole message, naming its field where the detail does; ids are never echoed."""
    status: Status = 422 if exc.reason in _RULE_REASONS else 400
    detail, expression = exc.detail, where
    named = _FIELD.search(detail)
    if exc.reason == "invalid_id":
        field = detail.split(" ", 1)[0]
        detail, expression = f"{field} must be a string matching {ID_PATTERN}", f"{where}.{field}"
    elif named is not None:
        expression = f"{where}.{named.group(1)}"
    elif exc.reason == "impossible_value" and detail.startswith("seq "):
        expression = f"{where}.seq"
    elif exc.reason == "too_many_readings":
        expression = f"{where}.readings"
    elif exc.reason == "unknown_schema":
        expression = f"{where}.schema"
    return refuse(status, exc.reason, detail, expression)
