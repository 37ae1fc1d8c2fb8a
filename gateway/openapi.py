"""The gateway's API as an OpenAPI 3.0 document, served at ``GET /openapi.json``.

Written by hand from the routes in :mod:`gateway.app` and checked against the running gateway
(``tests/gateway/test_service_fuzz.py`` runs schemathesis on it: every answer must be one the
document lists, in the shape it gives, and no 5xx but the documented 503). The native message's
schema is built from the wire format's own rules (:data:`kernel.limits.ID_PATTERN`,
:data:`kernel.vocabulary.METRICS`), so the two cannot drift.

Examples
--------
>>> doc = openapi_document(1_048_576)
>>> sorted(doc["paths"])
['/fhir', '/fhir/', '/fhir/Observation', '/healthz', '/metrics', '/openapi.json', '/v1/uploads']
>>> sorted(doc["paths"]["/v1/uploads"]["post"]["responses"])
['202', '400', '401', '403', '413', '415', '422', '429', '503']
"""

from __future__ import annotations

from typing import Any

from kernel.limits import ID_PATTERN
from kernel.vocabulary import METRICS
from kernel.wire import DEVICE_SCHEMA, MAX_INT64

#: HTTP statuses an upload may be refused with, and what each means.
REFUSALS = {
    "400": "The body is not valid JSON, or not valid gzip, or breaks a structural limit.",
    "401": "No bearer token, or one that is malformed, unknown, revoked or wrong.",
    "403": "A message names a patient or device the token is not bound to.",
    "413": "The body, as sent or inflated, is larger than the gateway accepts.",
    "415": "A Content-Type or Content-Encoding the gateway does not read.",
    "422": "A message or reading breaks the format's rules (unknown metric or code, wrong unit, impossible value).",
    "429": "The device made more uploads than its rate allows; retry after Retry-After seconds.",
    "503": "Not stored: the broker did not acknowledge in time, or credentials could not be checked. "
           "Retry after Retry-After seconds; what was acknowledged is kept once.",
}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.",
                                "schema": {"type": "integer", "minimum": 1}}}
_WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": "The Bearer challenge.", "schema": {"type": "string"}}}
_ID = {"type": "string", "pattern": f"^{ID_PATTERN}$"}
_EPOCH_MS = {"type": "integer", "minimum": 1, "maximum": MAX_INT64}

_SCHEMAS: dict[str, Any] = {
    "Reading": {
        "type": "object", "required": ["metric", "t", "value"],
        "properties": {
            "metric": {"type": "string", "enum": sorted(METRICS)},
            "t": {**_EPOCH_MS, "description": "Epoch milliseconds (UTC) of the measurement."},
            "value": {"type": "number", "description": "In the metric's unit (see unit)."},
            "unit": {"type": "string", "enum": sorted({m.unit for m in METRICS.values()}),
                     "description": "Optional; when given, the metric's own unit."},
        },
    },
    "DeviceMessage": {
        "type": "object", "required": ["schema", "device_id", "patient_id", "seq", "sent_at", "readings"],
        "properties": {
            "schema": {"type": "string", "enum": [DEVICE_SCHEMA]},
            "device_id": _ID, "patient_id": _ID,
            "seq": {"type": "integer", "minimum": 0, "maximum": MAX_INT64,
                    "description": "The device's message number: a retry sends the same one."},
            "sent_at": {"type": "integer"},
            "readings": {"type": "array", "items": {"$ref": "#/components/schemas/Reading"}},
        },
    },
    "NativeUpload": {
        "oneOf": [{"$ref": "#/components/schemas/DeviceMessage"},
                  {"type": "array", "items": {"$ref": "#/components/schemas/DeviceMessage"}}],
    },
    "FhirResource": {
        "type": "object", "required": ["resourceType"],
        "properties": {"resourceType": {"type": "string", "enum": ["Observation", "Bundle"]}},
        "description": "A FHIR R4 vital-signs Observation, or a Bundle (transaction, batch, collection) of them.",
    },
    "FhirObservation": {
        "type": "object", "required": ["resourceType"],
        "properties": {"resourceType": {"type": "string", "enum": ["Observation"]}},
        "description": "A FHIR R4 vital-signs Observation (LOINC code, UCUM unit, effectiveDateTime, subject).",
    },
    "FhirBundle": {
        "type": "object", "required": ["resourceType"],
        "properties": {"resourceType": {"type": "string", "enum": ["Bundle"]},
                       "type": {"type": "string", "enum": ["transaction", "batch", "collection"]}},
    },
    "OpenMHealthUpload": {
        "description": "An Open mHealth (IEEE 1752) data point with header and body, or an array of them.",
        "oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}],
    },
    "Accepted": {
        "type": "object", "required": ["status", "format", "messages", "readings", "duplicates", "received_ms"],
        "properties": {
            "status": {"type": "string", "enum": ["accepted"]},
            "format": {"type": "string", "enum": ["native", "fhir", "omh"]},
            "messages": {"type": "integer", "minimum": 0},
            "readings": {"type": "integer", "minimum": 0},
            "duplicates": {"type": "integer", "minimum": 0,
                           "description": "Messages accepted before (a retry): not produced again."},
            "received_ms": {"type": "integer", "description": "When the gateway received the upload, epoch ms."},
        },
    },
    "Refusal": {
        "type": "object", "required": ["status", "reason", "detail"],
        "properties": {"status": {"type": "integer"}, "reason": {"type": "string"}, "detail": {"type": "string"}},
    },
    "OperationOutcome": {
        "type": "object", "required": ["resourceType", "issue"],
        "properties": {
            "resourceType": {"type": "string", "enum": ["OperationOutcome"]},
            "issue": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["severity", "code"],
                "properties": {"severity": {"type": "string",
                                            "enum": ["fatal", "error", "warning", "information"]},
                               "code": {"type": "string"}, "diagnostics": {"type": "string"},
                               "expression": {"type": "array", "items": {"type": "string"}}}}},
        },
    },
}


def _responses(fhir: bool) -> dict[str, Any]:
    def body(schema: str) -> dict[str, Any]:
        ref = {"$ref": f"#/components/schemas/{schema}"}
        return {"application/fhir+json": {"schema": ref}} if fhir else {"application/json": {"schema": ref}}

    error = "OperationOutcome" if fhir else "Refusal"
    # A FHIR route answers an error with an OperationOutcome; /v1/uploads does too for FHIR content.
    refusal_content = body(error) if fhir else {**body("Refusal"), **{
        "application/fhir+json": {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}}}
    accepted = body("OperationOutcome") if fhir else {**body("Accepted"), **{
        "application/fhir+json": {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}}}
    responses: dict[str, Any] = {
        "202": {"description": "Accepted: every record acknowledged by the broker (an OperationOutcome "
                               "for FHIR content).", "content": accepted},
    }
    for status, text in REFUSALS.items():
        response: dict[str, Any] = {"description": text, "content": refusal_content}
        if status in ("429", "503"):
            response["headers"] = _RETRY_AFTER
        if status == "401":
            response["headers"] = _WWW_AUTHENTICATE
        responses[status] = response
    return responses


_CONTENT_ENCODING = {"name": "Content-Encoding", "in": "header", "required": False,
                     "description": "gzip to send a compressed body (inflated within a bound).",
                     "schema": {"type": "string", "enum": ["gzip", "identity"]}}


def openapi_document(max_body_bytes: int) -> dict[str, Any]:
    """The OpenAPI 3.0 description of the gateway that accepts bodies up to ``max_body_bytes``."""
    def fhir_body(schema: str) -> dict[str, Any]:
        ref = {"$ref": f"#/components/schemas/{schema}"}
        return {"required": True, "content": {"application/fhir+json": {"schema": ref},
                                              "application/json": {"schema": ref}}}

    upload_text = (f"Bodies of up to {max_body_bytes} bytes as sent. Answered 202 only after the broker "
                   "acknowledged every record; a retried upload is accepted once.")
    return {
        "openapi": "3.0.3",
        "info": {"title": "vitalrisk ingest gateway", "version": "1",
                 "description": "Devices and vendors upload vital signs: native vitalrisk.device/1, FHIR R4 "
                                "Observations and Bundles, Open mHealth data points."},
        "components": {
            "securitySchemes": {"deviceToken": {"type": "http", "scheme": "bearer",
                                                "description": "The device token from `vitalrisk devices enroll`."}},
            "schemas": _SCHEMAS,
        },
        "paths": {
            "/v1/uploads": {"post": {
                "operationId": "upload", "summary": "Upload readings in any of the three formats.",
                "description": upload_text, "security": [{"deviceToken": []}],
                "parameters": [_CONTENT_ENCODING],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/NativeUpload"}},
                    "application/fhir+json": {"schema": {"$ref": "#/components/schemas/FhirResource"}},
                    "application/vnd.openmhealth+json": {"schema": {"$ref": "#/components/schemas/OpenMHealthUpload"}},
                }},
                "responses": _responses(fhir=False),
            }},
            "/fhir/Observation": {"post": {
                "operationId": "createObservation", "summary": "FHIR create of one vital-signs Observation.",
                "description": upload_text, "security": [{"deviceToken": []}], "parameters": [_CONTENT_ENCODING],
                "requestBody": fhir_body("FhirObservation"), "responses": _responses(fhir=True),
            }},
            **{path: {"post": {
                "operationId": operation, "summary": "FHIR transaction, batch or collection Bundle.",
                "description": upload_text + note, "security": [{"deviceToken": []}], "parameters": [_CONTENT_ENCODING],
                "requestBody": fhir_body("FhirBundle"), "responses": _responses(fhir=True),
            }} for path, operation, note in (
                ("/fhir", "postBundle", ""),
                ("/fhir/", "postBundleAtBase", " The same as POST /fhir, for clients that keep a slash after the "
                                               "base URL (a FHIR transaction is posted to the base)."))},
            "/healthz": {"get": {
                "operationId": "health", "summary": "Liveness.", "security": [],
                "responses": {"200": {"description": "The gateway runs.", "content": {"application/json": {
                    "schema": {"type": "object", "required": ["status"],
                               "properties": {"status": {"type": "string", "enum": ["ok"]}}}}}}},
            }},
            "/metrics": {"get": {
                "operationId": "metrics", "summary": "Prometheus metrics (no ids, no tokens).", "security": [],
                "responses": {"200": {"description": "Prometheus text format.",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}}},
            }},
            "/openapi.json": {"get": {
                "operationId": "openapi", "summary": "This document.", "security": [],
                "responses": {"200": {"description": "OpenAPI 3.0.", "content": {"application/json": {
                    "schema": {"type": "object"}}}}},
            }},
        },
    }
