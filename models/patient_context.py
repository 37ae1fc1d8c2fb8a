"""What the model knows of a patient besides the vitals: the conditions they are enrolled for, and
their age band.

A remote-monitoring programme enrols patients *for* a diagnosis, so it knows which deteriorations
each one is at risk of: a heart-failure decompensation is expected only with heart failure. Given
as inputs, the diagnoses let every head learn its base rate per condition instead of guessing it
from vitals. Age band is an input as in most clinical risk scores (NEWS2 is the exception): with
diagnoses alone, a linear model adds up several conditions' risks in the logit and so over-predicts
the multimorbid old and under-predicts the young, and its calibration by age band drifts
(measured: see the README, "Risk models"). Sex and skin tone are *not* inputs — they are what the
fairness monitor compares the model across.

Pure: the trainer and the worker feed it :class:`~stream.wire.PatientRecord` s from the compacted
patients topic; ``evaluate`` from the simulated cohort.

Examples
--------
>>> from stream.wire import PatientRecord
>>> context = PatientContext()
>>> context.update(PatientRecord("pt-1", {"age_band": "75+", "sex": "F"}, ("copd",)))
>>> x = context.join("pt-1", {"heart_rate_mean_15m": 80.0})
>>> x["dx_copd"], x["dx_heart_failure"], x["age_75+"], x["age_<65"], "sex" in str(x)
(1.0, 0.0, 1.0, 0.0, False)
>>> context.join("pt-2", {"heart_rate_mean_15m": 80.0})  # unknown patient: nothing added
{'heart_rate_mean_15m': 80.0}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import numpy.typing as npt

from stream.wire import PATIENT_ATTRIBUTES, PATIENT_CONDITIONS, PatientRecord

#: The model's input name of each enrolment diagnosis, 1.0 when the patient has it, else 0.0.
DIAGNOSIS_FEATURES: tuple[str, ...] = tuple(f"dx_{c}" for c in PATIENT_CONDITIONS)
#: The model's input name of each age band, 1.0 for the patient's band, else 0.0.
AGE_FEATURES: tuple[str, ...] = tuple(f"age_{band}" for band in PATIENT_ATTRIBUTES["age_band"])
#: Every patient input, in the array path's column order.
PATIENT_FEATURES: tuple[str, ...] = DIAGNOSIS_FEATURES + AGE_FEATURES


def patient_features(conditions: Iterable[str] | None, age_band: str | None) -> dict[str, float]:
    """The inputs of a patient with ``conditions`` in ``age_band``; what is unknown (``None``) adds none.

    >>> patient_features(["heart_failure"], None)
    {'dx_heart_failure': 1.0, 'dx_copd': 0.0, 'dx_hypertension': 0.0, 'dx_type2_diabetes': 0.0, \
'dx_atrial_fibrillation': 0.0}
    >>> patient_features(None, "<65")
    {'age_<65': 1.0, 'age_65-74': 0.0, 'age_75+': 0.0}
    """
    out: dict[str, float] = {}
    if conditions is not None:
        have = set(conditions)
        out.update({name: 1.0 if c in have else 0.0 for name, c in zip(DIAGNOSIS_FEATURES, PATIENT_CONDITIONS)})
    if age_band is not None:
        out.update({name: 1.0 if band == age_band else 0.0
                    for name, band in zip(AGE_FEATURES, PATIENT_ATTRIBUTES["age_band"])})
    return out


def patient_matrix(records: Iterable[PatientRecord]) -> npt.NDArray[np.float64]:
    """One row of inputs (columns :data:`PATIENT_FEATURES`, NaN: unknown) per patient, for the array path.

    >>> patient_matrix([PatientRecord("pt-1", {"age_band": "<65"}, ("copd",))]).tolist()
    [[0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]]
    """
    rows = []
    for record in records:
        x = patient_features(record.conditions, record.groups.get("age_band"))
        rows.append([x.get(name, np.nan) for name in PATIENT_FEATURES])
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(PATIENT_FEATURES))


class PatientContext:
    """The inputs of every known patient, joined to their feature rows.

    A patient whose record has not arrived gets no patient inputs, and one whose record says
    nothing of conditions no diagnosis inputs: the model then scores from what it has (a scaled
    absent input counts as the average patient), rather than as a patient known to have none.
    """

    def __init__(self) -> None:
        self._inputs: dict[str, dict[str, float]] = {}

    def __len__(self) -> int:
        return len(self._inputs)

    def update(self, record: PatientRecord) -> None:
        """The latest record of a patient wins."""
        inputs = patient_features(record.conditions, record.groups.get("age_band"))
        if inputs:
            self._inputs[record.patient_id] = inputs
        else:
            self._inputs.pop(record.patient_id, None)

    def forget(self, patient_id: str) -> None:
        """The patient left the programme (a tombstone on the patients topic)."""
        self._inputs.pop(patient_id, None)

    def inputs(self, patient_id: str) -> Mapping[str, float]:
        """The patient's inputs; empty when unknown."""
        return self._inputs.get(patient_id, {})

    def join(self, patient_id: str, x: Mapping[str, float]) -> dict[str, float]:
        """A feature row's inputs with the patient's inputs added."""
        extra = self._inputs.get(patient_id)
        return {**x, **extra} if extra else dict(x)
