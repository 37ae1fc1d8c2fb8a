"""The native format: ``vitalrisk.device/1`` messages, one or a JSON array of them, checked by the worker's own rules.

Each message is checked by :func:`kernel.wire.check_device_message` within the configured
:class:`~kernel.limits.Limits` (and :func:`kernel.limits.check_shape` for its depth, numbers and
strings): the one definition of the fields, their limits and the id rule, so the gateway accepts
exactly what the worker would. The body is read once, as a whole; its messages are checked where
they stand, never written back to JSON. An upload whose every message is valid takes the fast
path, :func:`parse_valid_native` (:func:`kernel.wire.decode_valid_device_messages`: read and
checked in one typed pass); any other takes :func:`parse_native`, which names every fault.

Unlike the worker, which keeps a message's good readings and dead-letters the others, the
gateway refuses the whole upload when any reading is invalid (422, one issue per reading,
``$[i].readings[j]``): the sender is there to fix and resend it, and nothing partial is
acknowledged. A message whose envelope cannot be read (no ``seq``, a ``patient_id`` of the
wrong type) is a 400; an id that breaks the id rule, a ``seq`` out of range or too many
readings a 422.

Examples
--------
>>> import json
>>> from kernel.limits import Limits
>>> from kernel.wire import encode_device_message
>>> raw = encode_device_message(device_id="dev-1", patient_id="pt-1", seq=7, sent_at=2_000,
...                             readings=[("heart_rate", 1_000, 71.0)])
>>> parse_valid_native(raw, Limits()) == parse_native(json.loads(raw), Limits())
True
>>> parse_native(json.loads(raw), Limits())
(ParsedMessage(patient_id='pt-1', device_id='dev-1', seq=7, readings=(('heart_rate', 1000, 71.0),)),)
>>> bad = encode_device_message(device_id="dev-1", patient_id="pt-1", seq=8, sent_at=2_000,
...                             readings=[("heart_rate", 1_000, 71.0), ("heart_rate", 2_000, 400.0)])
>>> parse_valid_native(b"[" + raw + b"," + bad + b"]", Limits()) is None
True
>>> parse_native([json.loads(raw), json.loads(bad)], Limits())
Traceback (most recent call last):
...
gateway.outcome.UploadRefused: impossible_value: reading 1: heart_rate must lie in [20, 300] beats/min, got 400 (at $[1].readings[1])
"""

from __future__ import annotations

import re

from kernel.errors import InvalidMessage
from kernel.limits import ID_PATTERN, Limits, check_shape
from kernel.wire import DeviceBatch, check_device_message, decode_valid_device_messages

from gateway.outcome import Issue, Status, UploadRefused, combine, refuse
from gateway.parsed import ParsedMessage

#: Envelope reasons of kernel.wire that are a readable message breaking a rule (422), not a broken one (400).
_RULE_REASONS = frozenset({"invalid_id", "impossible_value", "too_many_readings", "too_large"})
_FIELD = re.compile(r"field '(\w+)'")


def parse_valid_native(body: bytes, limits: Limits) -> tuple[ParsedMessage, ...] | None:
    """The messages of a native upload whose every message and reading is valid, read from ``body`` in one pass.

    ``None`` when the body is anything else (another format, a fault anywhere, a limit in
    doubt): then :func:`parse_native` on the body read by :func:`kernel.limits.load_json`
    accepts it or names its faults. When it answers, :func:`parse_native` would answer the same.
    """
    batches = decode_valid_device_messages(body, limits=limits)
    return None if batches is None else tuple(_parsed(batch) for batch in batches)


def parse_native(document: object, limits: Limits) -> tuple[ParsedMessage, ...]:
    """The messages of a native upload: ``document`` is its JSON, read within limits at least as wide as ``limits``.

    Each message (the document, or each item of an array) is held to ``limits`` itself:
    :func:`~kernel.limits.check_shape`, then :func:`~kernel.wire.check_device_message`.
    :class:`~gateway.outcome.UploadRefused` names every message and reading at fault.
    """
    if isinstance(document, list):
        if not document:
            raise refuse(422, "empty_batch", "the array holds no message", "$")
        items = [(f"$[{i}]", item) for i, item in enumerate(document)]
    else:
        items = [("$", document)]
    messages: list[ParsedMessage] = []
    refusals: list[UploadRefused] = []
    for where, item in items:
        try:
            messages.append(_message(item, where, limits))
        except UploadRefused as refused:
            refusals.append(refused)
    if refusals:
        raise combine(refusals)
    return tuple(messages)


def _message(item: object, where: str, limits: Limits) -> ParsedMessage:
    try:
        check_shape(item, limits)
        batch = check_device_message(item, limits=limits)
    except InvalidMessage as exc:
        raise _envelope_refusal(exc, where) from None
    if batch.rejected:
        raise UploadRefused(422, [Issue(r.reason, f"reading {r.index}: {r.detail}", f"{where}.readings[{r.index}]")
                                  for r in batch.rejected])
    return _parsed(batch)


def _parsed(batch: DeviceBatch) -> ParsedMessage:
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
