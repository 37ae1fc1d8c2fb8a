"""What an accepted upload holds: its readings, grouped into messages the gateway can forward.

Every format gives the same result, a :class:`ParsedUpload` of :class:`ParsedMessage` s, each one
patient's (and device's) readings as ``(wire metric name, t epoch-ms, value in the wire unit)``,
already checked against :mod:`kernel.vocabulary` (names, units, physical limits) and the id rule.

Examples
--------
>>> rows = [("pt-1", "dev-1", ("heart_rate", 1_000, 71.0)), ("pt-2", None, ("step_count", 1_000, 12.0)),
...         ("pt-1", "dev-1", ("heart_rate", 2_000, 72.0))]
>>> [(m.patient_id, m.device_id, len(m.readings)) for m in group_readings(rows, max_readings=10)]
[('pt-1', 'dev-1', 2), ('pt-2', None, 1)]
>>> [len(m.readings) for m in group_readings(rows * 3, max_readings=4)]
[4, 2, 3]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

#: One reading: (wire metric name, t epoch-ms, value in the wire unit).
Reading = tuple[str, int, float]
#: The formats an upload may come in.
Format = Literal["native", "fhir", "omh"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedMessage:
    """One patient's readings from one upload, at most ``Limits.max_readings`` of them.

    Parameters
    ----------
    patient_id
        Pseudonymous id (follows :data:`kernel.limits.ID_PATTERN`). For Open mHealth data points
        without ``header.user_id`` it is ``""``: the data point names no patient, and the service
        fills in the patient the device's token is bound to.
    device_id
        ``None`` when the upload names no device (FHIR without ``device``, Open mHealth).
    seq
        The native format's sequence number; ``None`` for FHIR and Open mHealth.
    readings
        ``(wire metric name, t epoch-ms, value in the wire unit)``, in the upload's order.
    """

    patient_id: str
    device_id: str | None
    seq: int | None
    readings: tuple[Reading, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedUpload:
    """An accepted upload: its format and its messages (possibly none: an empty native message)."""

    format: Format
    messages: tuple[ParsedMessage, ...]

    @property
    def readings(self) -> int:
        """How many readings the upload holds.

        >>> ParsedUpload(format="fhir", messages=(ParsedMessage(patient_id="pt-1", device_id=None, seq=None,
        ...     readings=(("heart_rate", 1, 70.0),)),)).readings
        1
        """
        return sum(len(m.readings) for m in self.messages)


def group_readings(rows: Iterable[tuple[str, str | None, Reading]], *, max_readings: int) -> tuple[ParsedMessage, ...]:
    """Readings of FHIR resources or Open mHealth data points as messages, one per (patient, device).

    Messages come in the order their (patient, device) first appears, readings in upload order;
    a group of more than ``max_readings`` is split, so each message fits one device message.
    """
    groups: dict[tuple[str, str | None], list[Reading]] = {}
    for patient_id, device_id, reading in rows:
        groups.setdefault((patient_id, device_id), []).append(reading)
    return tuple(ParsedMessage(patient_id=patient_id, device_id=device_id, seq=None,
                               readings=tuple(readings[start:start + max_readings]))
                 for (patient_id, device_id), readings in groups.items()
                 for start in range(0, len(readings), max_readings))
