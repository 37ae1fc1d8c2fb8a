"""Building blocks of resources made with SMART on FHIR's ``fhirclient`` models, as its users write them.

The attributes are set one by one and serialised with ``as_json()``, which checks each element's
type against the R4 model: what a client application built on the library sends.
"""

from __future__ import annotations

from fhirclient.models.bundle import Bundle, BundleEntry, BundleEntryRequest
from fhirclient.models.codeableconcept import CodeableConcept
from fhirclient.models.coding import Coding
from fhirclient.models.fhirreference import FHIRReference
from fhirclient.models.observation import Observation
from fhirclient.models.quantity import Quantity

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def concept(code: str) -> CodeableConcept:
    """A CodeableConcept of one LOINC code."""
    coding = Coding()
    coding.system, coding.code = LOINC, code
    value = CodeableConcept()
    value.coding = [coding]
    return value


def quantity(value: float, code: str, unit: str) -> Quantity:
    """A UCUM Quantity."""
    result = Quantity()
    result.value, result.unit, result.system, result.code = value, unit, UCUM, code
    return result


def reference(text: str) -> FHIRReference:
    """A literal reference such as ``Patient/pt-1``."""
    result = FHIRReference()
    result.reference = text
    return result


def bundle(observations: list[Observation], kind: str) -> Bundle:
    """A Bundle of ``kind`` holding ``observations`` (each entry a POST to Observation, but in a collection)."""
    result = Bundle()
    result.type = kind
    result.entry = []
    for observation in observations:
        entry = BundleEntry()
        entry.resource = observation
        if kind != "collection":
            entry.request = BundleEntryRequest()
            entry.request.method, entry.request.url = "POST", "Observation"
        result.entry.append(entry)
    return result
