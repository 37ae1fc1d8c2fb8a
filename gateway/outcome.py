"""Why an upload is refused, and how the refusal is told: :class:`UploadRefused` and its FHIR OperationOutcome.

A refusal holds one :class:`Issue` per fault found (at most :data:`MAX_ISSUES`), each with a
short, low-cardinality ``reason`` (a metric label), one line of ``detail`` and the
``expression`` of the element at fault:

- in a FHIR resource, a FHIRPath from the resource type, ``Bundle.entry[2].resource.valueQuantity.code``;
- in any other JSON document, the same dotted path from ``$``, the document's root:
  ``$[1].readings[3]``, ``$.body.heart_rate.unit``.

Details state the rule and name the element; they never repeat an id or a reference (a
``subject`` may hold a name by mistake) and quote a sent value only as a clipped token.

The status follows HTTP and FHIR's own use of it: 415 for a media type the gateway does not read,
413 for a body larger than one record, 400 for a body that cannot be read as its format (not
JSON, not a FHIR resource, not an Open mHealth data point, a device message whose envelope is
broken), 422 for a body that can be read but breaks a rule (an unknown code, a wrong unit, an
impossible value, an id that breaks the id rule). When several issues are found, the first one's
status and reason are the refusal's.

Examples
--------
>>> refused = UploadRefused(422, [Issue("wrong_unit", "body_temperature takes Cel, [degF] or K, got 'mmol/L'",
...                                      "Observation.valueQuantity.code")])
>>> refused.status, refused.reason
(422, 'wrong_unit')
>>> print(refused)
wrong_unit: body_temperature takes Cel, [degF] or K, got 'mmol/L' (at Observation.valueQuantity.code)
>>> issue = refused.outcome()["issue"][0]
>>> issue["code"], issue["expression"], issue["details"]["coding"][0]["code"]
('code-invalid', ['Observation.valueQuantity.code'], 'wrong_unit')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from kernel.errors import VitalsError

#: Most issues one refusal reports (the rest are counted in the last issue's place).
MAX_ISSUES = 20
#: Longest detail of one issue, in characters (ASCII).
MAX_DETAIL_CHARS = 200
#: The code system of the refusal reasons in an OperationOutcome's ``issue.details.coding``.
REASON_SYSTEM = "urn:vitalrisk:gateway:refusal-reason"

#: OperationOutcome ``issue.code`` values used here (FHIR R4 value set ``issue-type``).
IssueType = Literal["invalid", "structure", "required", "value", "code-invalid", "not-supported", "too-long",
                    "business-rule", "duplicate", "login", "forbidden", "throttled", "transient", "exception"]
#: What the body can earn (400, 413, 415, 422) and what the service adds: 401 and 403 for the
#: credential, 429 over the device's rate, 503 while the broker or the credentials are unreachable;
#: the HTTP app answers 404 and 405 for routes and methods it lacks, and 500 for its own bugs.
Status = Literal[400, 401, 403, 404, 405, 413, 415, 422, 429, 500, 503]

#: Every refusal reason, and the OperationOutcome issue type it is told as; read-only.
ISSUE_TYPES: Mapping[str, IssueType] = MappingProxyType({
    # the body as a whole (kernel.limits.load_json, the media type, the format)
    "unsupported_media_type": "not-supported", "unsupported_charset": "not-supported",
    "unsupported_fhir_version": "not-supported", "too_large": "too-long", "empty": "required",
    "not_json": "structure", "too_deep": "structure", "number_too_large": "structure",
    "string_too_long": "structure", "duplicate_key": "structure", "unknown_format": "structure",
    "empty_batch": "required",
    # a native device message (kernel.wire's reasons)
    "not_an_object": "structure", "unknown_schema": "structure", "missing_field": "required",
    "wrong_type": "structure", "too_many_readings": "too-long", "unknown_metric": "code-invalid",
    "future_timestamp": "value",
    # FHIR and Open mHealth
    "malformed_fhir": "structure", "malformed_omh": "structure", "unsupported_resource": "not-supported",
    "unsupported_bundle_type": "not-supported", "unsupported_request": "not-supported",
    "unsupported_schema": "not-supported", "unsupported_status": "business-rule",
    "unknown_loinc": "code-invalid", "ambiguous_code": "code-invalid", "duplicate_component": "duplicate",
    "unexpected_component": "structure", "unexpected_value": "structure", "wrong_value_type": "value",
    "missing_value": "required", "inexact_value": "value", "wrong_unit": "code-invalid",
    "missing_time": "required", "imprecise_time": "value", "invalid_subject": "value", "invalid_device": "value",
    # any format
    "invalid_id": "value", "impossible_value": "value",
    # the service: encoding, credential, binding, rate, availability
    "bad_encoding": "structure", "unauthorized": "login", "patient_mismatch": "forbidden",
    "device_mismatch": "forbidden", "rate_limited": "throttled", "broker_unavailable": "transient",
    "auth_unavailable": "transient", "not_found": "not-supported", "method_not_allowed": "not-supported",
    "internal_error": "exception",
})


@dataclass(frozen=True, slots=True)
class Issue:
    """One fault of an upload.

    Parameters
    ----------
    reason
        Short code, e.g. ``"unknown_loinc"`` (a metric label: a fixed, small set).
    detail
        One line: the rule and the element; a sent value only as a clipped token.
    expression
        Where the fault is (see the module docstring); ``None`` for the body as a whole.
    """

    reason: str
    detail: str
    expression: str | None = None

    @property
    def code(self) -> IssueType:
        """The OperationOutcome issue type of the reason (:data:`ISSUE_TYPES`)."""
        return ISSUE_TYPES.get(self.reason, "invalid")

    def as_json(self) -> dict[str, object]:
        """The issue as one entry of an OperationOutcome's ``issue`` array."""
        detail = self.detail.encode("ascii", "backslashreplace").decode()[:MAX_DETAIL_CHARS]
        item: dict[str, object] = {
            "severity": "error", "code": self.code,
            "details": {"coding": [{"system": REASON_SYSTEM, "code": self.reason}], "text": detail},
        }
        if self.expression is not None:
            item["expression"] = [self.expression]
        return item


class UploadRefused(VitalsError):
    """An upload the gateway will not forward: its HTTP status, its issues, and the OperationOutcome telling them.

    Parameters
    ----------
    status
        400, 413, 415 or 422 (see the module docstring).
    issues
        The faults found, in document order; at least one. Only the first :data:`MAX_ISSUES` are kept.

    Attributes
    ----------
    reason, detail
        The first issue's, for metrics and a log line.
    """

    def __init__(self, status: Status, issues: Sequence[Issue]) -> None:
        if not issues:
            raise ValueError("a refusal needs at least one issue")
        kept = tuple(issues[:MAX_ISSUES])
        first = kept[0]
        where = f" (at {first.expression})" if first.expression else ""
        more = f"; {len(issues) - 1} more issue(s)" if len(issues) > 1 else ""
        super().__init__(f"{first.reason}: {first.detail}{where}{more}")
        self.status: Status = status
        self.issues = kept
        self.dropped = len(issues) - len(kept)
        self.reason = first.reason
        self.detail = first.detail

    def outcome(self) -> dict[str, object]:
        """The refusal as a FHIR R4 OperationOutcome (JSON-ready dict).

        >>> many = UploadRefused(400, [Issue("not_json", "x")] * (MAX_ISSUES + 5))
        >>> issues = many.outcome()["issue"]
        >>> len(issues), issues[-1]["details"]["text"]
        (21, '5 more issue(s) not listed')
        """
        issues = [issue.as_json() for issue in self.issues]
        if self.dropped:
            issues.append({"severity": "information", "code": "informational",
                           "details": {"text": f"{self.dropped} more issue(s) not listed"}})
        return {"resourceType": "OperationOutcome", "issue": issues}


def refuse(status: Status, reason: str, detail: str, expression: str | None = None) -> UploadRefused:
    """A refusal with one issue (to ``raise``).

    >>> refuse(415, "unsupported_media_type", "text/csv is not read here").issues[0].code
    'not-supported'
    """
    return UploadRefused(status, [Issue(reason, detail, expression)])


def combine(refusals: Sequence[UploadRefused]) -> UploadRefused:
    """One refusal holding the issues of several (those of a batch's items, in order).

    >>> a = refuse(422, "wrong_unit", "u", "$[0]")
    >>> b = refuse(400, "not_json", "j", "$[3]")
    >>> both = combine([a, b])
    >>> both.status, both.reason, [i.expression for i in both.issues]
    (422, 'wrong_unit', ['$[0]', '$[3]'])
    """
    if not refusals:
        raise ValueError("nothing to combine")
    issues = [issue for refusal in refusals for issue in refusal.issues]
    return UploadRefused(refusals[0].status, issues)
