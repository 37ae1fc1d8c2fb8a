"""PLACEHOLDER: the native format only, to be replaced by the formats helper's module.

The ingest gateway's parser of upload bodies. This minimal version reads the native
``vitalrisk.device/1`` format (one message, or a JSON array of messages) with
:func:`kernel.wire.decode_device_message` and refuses an upload with any invalid reading (422).
FHIR R4 and Open mHealth bodies are refused with 415 until the full parser lands.

Examples
--------
>>> from kernel.wire import encode_device_message
>>> raw = encode_device_message(device_id="dev-1", patient_id="pt-1", seq=3, sent_at=60_000,
...                             readings=[("heart_rate", 1_000, 70.0)])
>>> upload = parse_upload(raw, content_type="application/json", limits=Limits())
>>> upload.format, upload.messages[0].seq, upload.messages[0].readings
('native', 3, (('heart_rate', 1000, 70.0),))
>>> parse_upload(b"[]", content_type="application/json", limits=Limits()).messages
()
>>> parse_upload(raw, content_type="text/plain", limits=Limits())
Traceback (most recent call last):
...
gateway.uploads.UploadRefused: unsupported_media_type: Content-Type must be application/json, got 'text/plain'
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from kernel.errors import InvalidMessage, VitalsError
from kernel.limits import Limits, clip, load_json
from kernel.wire import decode_device_message

#: Content types of the native format.
NATIVE_TYPES = ("application/json", "application/vnd.vitalrisk.device+json")
#: FHIR issue type for each HTTP status an upload can be refused with.
_ISSUE_CODES = {400: "structure", 401: "login", 403: "forbidden", 404: "not-found", 413: "too-costly",
                415: "not-supported", 422: "invalid", 429: "throttled", 503: "transient"}


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedMessage:
    """One device message of an upload: ``(metric, t_ms, value)`` readings in the wire unit."""

    patient_id: str
    device_id: str | None
    seq: int | None
    readings: tuple[tuple[str, int, float], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedUpload:
    """What an upload body holds, in the format it came in."""

    format: Literal["native", "fhir", "omh"]
    messages: tuple[ParsedMessage, ...]


class UploadRefused(VitalsError):
    """An upload the gateway refuses: the HTTP status, a short reason code and one line of detail."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail

    def outcome(self) -> dict[str, object]:
        """The refusal as a FHIR ``OperationOutcome``.

        >>> UploadRefused(422, "wrong_unit", "heart_rate must be in 'beats/min'").outcome()["issue"][0]["code"]
        'invalid'
        """
        return {"resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": _ISSUE_CODES.get(self.status, "processing"),
                           "details": {"text": self.reason}, "diagnostics": self.detail}]}


def parse_upload(body: bytes, *, content_type: str, limits: Limits) -> ParsedUpload:
    """The messages of one native upload; :class:`UploadRefused` if it cannot be accepted whole."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in NATIVE_TYPES:
        raise UploadRefused(415, "unsupported_media_type",
                            f"Content-Type must be application/json, got {clip(content_type)}")
    try:
        document = load_json(body, limits)
    except InvalidMessage as exc:
        raise UploadRefused(413 if exc.reason == "too_large" else 400, exc.reason, exc.detail) from None
    items = document if isinstance(document, list) else [document]
    messages = []
    for number, item in enumerate(items):
        try:
            batch = decode_device_message(json.dumps(item).encode(), limits=limits)
        except InvalidMessage as exc:
            raise UploadRefused(422, exc.reason, f"message {number}: {exc.detail}") from None
        if batch.rejected:
            first = batch.rejected[0]
            raise UploadRefused(422, first.reason, f"message {number}, reading {first.index}: {first.detail}")
        messages.append(ParsedMessage(patient_id=batch.patient_id, device_id=batch.device_id, seq=batch.seq,
                                      readings=tuple(batch.points)))
    return ParsedUpload(format="native", messages=tuple(messages))
