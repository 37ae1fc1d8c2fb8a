"""The entry point of the gateway's pure core: an upload's body and media type in, its readings or a refusal out.

:func:`parse_upload` reads a body the service has already decompressed and bounded, in one of
three formats (docs/gateway-formats.md):

======================================  ==========================================================
``Content-Type``                        read as
======================================  ==========================================================
``application/fhir+json``               FHIR R4: an Observation or a Bundle (:mod:`gateway.fhir`);
                                        also the older ``application/json+fhir``
``application/vnd.openmhealth+json``    Open mHealth data point(s)
``application/json``                    by content: ``resourceType`` -> FHIR; ``header`` and
                                        ``body`` -> Open mHealth (:mod:`gateway.omh`); ``schema``
                                        -> native ``vitalrisk.device/1`` (:mod:`gateway.native`);
                                        a JSON array by its first item
anything else                           415
======================================  ==========================================================

A ``charset`` other than UTF-8 is a 415, and so is a FHIR ``fhirVersion`` other than 4.0 (R4) or
4.3 (R4B). Every body is read first by :func:`kernel.limits.load_json`, the project's bounded
reader, so a hostile body costs no more than its size: a body larger than one record
(``Limits.max_message_bytes``) is a 413, and depth, numbers, strings and repeated keys are
bounded. FHIR nests deeper and writes longer strings (a narrative) than a device message, so an
upload is read with at least :data:`UPLOAD_DEPTH` levels and :data:`UPLOAD_STRING_CHARS`
characters; each native message inside is then held to the configured limits themselves by the
worker's rules. A native ``application/json`` upload whose every message is valid, the common
case, is read and checked in one typed pass instead (:func:`gateway.native.parse_valid_native`),
with the same result.

Examples
--------
>>> from kernel.limits import Limits
>>> body = b'{"schema": "vitalrisk.device/1", "device_id": "dev-1", "patient_id": "pt-1", "seq": 3, ' \\
...        b'"sent_at": 2000, "readings": [{"metric": "heart_rate", "t": 1000, "value": 71}]}'
>>> upload = parse_upload(body, content_type="application/json; charset=utf-8", limits=Limits())
>>> upload.format, upload.messages[0].seq, upload.messages[0].readings
('native', 3, (('heart_rate', 1000, 71.0),))
>>> parse_upload(body, content_type="text/csv", limits=Limits())
Traceback (most recent call last):
...
gateway.outcome.UploadRefused: unsupported_media_type: Content-Type must be application/fhir+json, application/vnd.openmhealth+json or application/json, got 'text/csv'
>>> parse_upload(b'{"hello": 1}', content_type="application/json", limits=Limits()).format
Traceback (most recent call last):
...
gateway.outcome.UploadRefused: unknown_format: a JSON upload is a FHIR resource (resourceType), an Open mHealth data point (header, body) or a vitalrisk.device/1 message (schema) (at $)
"""

from __future__ import annotations

import dataclasses

from kernel.errors import InvalidMessage
from kernel.limits import Limits, clip, load_json

from gateway.fhir import parse_fhir
from gateway.native import parse_native, parse_valid_native
from gateway.omh import parse_omh
from gateway.outcome import Issue, UploadRefused, refuse
from gateway.parsed import Format, ParsedMessage, ParsedUpload

__all__ = ["Issue", "ParsedMessage", "ParsedUpload", "UploadRefused", "parse_upload", "read_limits"]

FHIR_MEDIA_TYPES = frozenset({"application/fhir+json", "application/json+fhir"})
JSON_MEDIA_TYPE = "application/json"
#: Open mHealth's own media type (plain application/json is detected by content too).
OMH_MEDIA_TYPE = "application/vnd.openmhealth+json"
#: FHIR versions taken (the ``fhirVersion`` media-type parameter): R4 and R4B.
FHIR_VERSIONS = ("4.0", "4.3")
#: Fewest levels of nesting an upload is read with: a blood-pressure component's coding in a
#: Bundle entry is 9 levels down, an extension on it 11 and more.
UPLOAD_DEPTH = 16
#: Fewest characters of a string an upload is read with (a FHIR narrative is a few KiB of XHTML).
UPLOAD_STRING_CHARS = 16_384


def read_limits(limits: Limits) -> Limits:
    """The limits an upload's JSON is read with: ``limits`` with room for FHIR's depth and narratives.

    >>> read_limits(Limits()).max_depth, read_limits(Limits(max_depth=32)).max_depth
    (16, 32)
    """
    return dataclasses.replace(limits, max_depth=max(limits.max_depth, UPLOAD_DEPTH),
                               max_string_chars=max(limits.max_string_chars, UPLOAD_STRING_CHARS))


def parse_upload(body: bytes, *, content_type: str, limits: Limits) -> ParsedUpload:
    """The readings of one upload, or :class:`~gateway.outcome.UploadRefused` (400, 413, 415 or 422).

    Parameters
    ----------
    body
        The request body, decompressed and size-bounded by the service.
    content_type
        The request's ``Content-Type`` header (parameters included).
    limits
        The configured limits (``Limits.from_settings``): the native decoder's, the readings per
        message, and the body's size.

    Returns
    -------
    The format and the messages: per (patient, device), at most ``limits.max_readings`` readings
    each, in upload order. Nothing else is raised, whatever the body holds.
    """
    media, params = _media_type(content_type)
    if media not in FHIR_MEDIA_TYPES and media not in (JSON_MEDIA_TYPE, OMH_MEDIA_TYPE):
        raise refuse(415, "unsupported_media_type", "Content-Type must be application/fhir+json, "
                     f"application/vnd.openmhealth+json or application/json, got {clip(media)}")
    charset = params.get("charset")
    if charset is not None and charset not in ("utf-8", "utf8"):
        raise refuse(415, "unsupported_charset", f"JSON is UTF-8, got charset={clip(charset)}")
    version = params.get("fhirversion")
    if media in FHIR_MEDIA_TYPES and version is not None and not version.startswith(FHIR_VERSIONS):
        raise refuse(415, "unsupported_fhir_version", f"FHIR R4 (fhirVersion 4.0) is read here, got {clip(version)}")
    if media == JSON_MEDIA_TYPE:
        valid = parse_valid_native(body, limits)  # the common case, in one pass; None: read it in full below
        if valid is not None:
            return ParsedUpload(format="native", messages=valid)
    document = _load(body, limits)
    kind: Format = "fhir" if media in FHIR_MEDIA_TYPES else "omh" if media == OMH_MEDIA_TYPE else _detect(document)
    if kind == "fhir":
        messages = parse_fhir(document, limits)
    elif kind == "omh":
        messages = parse_omh(document, limits)
    else:
        messages = parse_native(document, limits)
    return ParsedUpload(format=kind, messages=messages)


def _media_type(content_type: str) -> tuple[str, dict[str, str]]:
    """``type/subtype`` and the parameters of a Content-Type, lower case (values unquoted).

    >>> _media_type('Application/FHIR+JSON; fhirVersion="4.0" ; charset=UTF-8')
    ('application/fhir+json', {'fhirversion': '4.0', 'charset': 'utf-8'})
    """
    media, *rest = content_type.split(";")
    params: dict[str, str] = {}
    for param in rest:
        name, _, value = param.partition("=")
        params[name.strip().lower()] = value.strip().strip('"').lower()
    return media.strip().lower(), params


def _load(body: bytes, limits: Limits) -> object:
    try:
        document: object = load_json(body, read_limits(limits))
    except InvalidMessage as exc:
        raise refuse(413 if exc.reason == "too_large" else 400, exc.reason, exc.detail) from None
    return document


def _detect(document: object) -> Format:
    """The format of an ``application/json`` body, by its content (an array by its first item)."""
    first = document[0] if isinstance(document, list) and document else document
    if isinstance(first, dict):
        if "resourceType" in first and not isinstance(document, list):
            return "fhir"
        if "header" in first and "body" in first:
            return "omh"
        if "schema" in first:
            return "native"
    if isinstance(document, list) and not document:
        raise refuse(422, "empty_batch", "the array holds nothing", "$")
    raise refuse(400, "unknown_format", "a JSON upload is a FHIR resource (resourceType), an Open mHealth data "
                 "point (header, body) or a vitalrisk.device/1 message (schema)", "$")
