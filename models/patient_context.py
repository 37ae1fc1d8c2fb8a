"""What the model knows of a patient besides the vitals: their age band and, optionally, the
conditions they are enrolled for.

Both come from the patient's record on the compacted patients topic; the trainer and the worker
feed it :class:`~kernel.wire.PatientRecord` s, ``evaluate`` the simulated cohort. Which are inputs
is a setting (``VITALS_MODEL_PATIENT_INPUTS``), the same for trainer and workers:

- ``age_band`` (the default), as in most clinical risk scores (NEWS2 is the exception): the
  model learns each band's base rate, which keeps it calibrated across age bands. Vitals alone
  left the over-75s under-predicted beyond the fairness gate on one seed in three (the conditions
  that bring deteriorations come with age, and vitals show them only in part).
- ``diagnoses`` (``dx_heart_failure``, …): a programme enrols patients *for* a condition, so it
  knows who is at risk of which deterioration. Measured, they raise window AUROC in busy cohorts
  but page later and less often on the default one (docs/models.md), so they are off.

Sex and skin tone are never inputs: they are what the fairness monitor compares the model across.

Examples
--------
>>> from kernel.wire import PatientRecord
>>> record = PatientRecord("pt-1", {"age_band": "75+", "sex": "F"}, ("copd",))
>>> context = PatientContext()
>>> context.update(record)
>>> context.join("pt-1", {"heart_rate_mean_15m": 80.0})
{'heart_rate_mean_15m': 80.0, 'age_<65': 0.0, 'age_65-74': 0.0, 'age_75+': 1.0}
>>> both = PatientContext(("age_band", "diagnoses"))
>>> both.update(record)
>>> both.join("pt-1", {})["dx_copd"], both.join("pt-2", {})  # pt-2: no record, nothing added
(1.0, {})
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

import numpy as np
import numpy.typing as npt

from kernel.wire import PATIENT_ATTRIBUTES, PATIENT_CONDITIONS, PatientRecord

#: The model's input name of each enrolment diagnosis, 1.0 when the patient has it, else 0.0.
DIAGNOSIS_FEATURES: tuple[str, ...] = tuple(f"dx_{c}" for c in PATIENT_CONDITIONS)
#: The model's input name of each age band, 1.0 for the patient's band, else 0.0.
AGE_FEATURES: tuple[str, ...] = tuple(f"age_{band}" for band in PATIENT_ATTRIBUTES["age_band"])
#: The kinds of patient input, as ``VITALS_MODEL_PATIENT_INPUTS`` names them.
INPUT_KINDS: tuple[str, ...] = ("age_band", "diagnoses")
DEFAULT_INPUTS: tuple[str, ...] = ("age_band",)


def parse_inputs(text: str) -> tuple[str, ...]:
    """The input kinds a ``VITALS_MODEL_PATIENT_INPUTS`` value names.

    >>> parse_inputs("age_band,diagnoses"), parse_inputs("none")
    (('age_band', 'diagnoses'), ())
    """
    kinds = tuple(k.strip() for k in text.split(",") if k.strip() and k.strip() != "none")
    unknown = set(kinds) - set(INPUT_KINDS)
    if unknown:
        raise ValueError(f"unknown patient inputs {sorted(unknown)}; known: {INPUT_KINDS} or none")
    return kinds


def patient_columns(inputs: Collection[str]) -> tuple[str, ...]:
    """The input names of ``inputs``, in the array path's column order.

    >>> patient_columns(("age_band",))
    ('age_<65', 'age_65-74', 'age_75+')
    """
    return (DIAGNOSIS_FEATURES if "diagnoses" in inputs else ()) + (AGE_FEATURES if "age_band" in inputs else ())


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


def patient_matrix(records: Iterable[PatientRecord], inputs: Collection[str] = DEFAULT_INPUTS,
                   ) -> npt.NDArray[np.float64]:
    """One row of inputs (columns :func:`patient_columns`, NaN: unknown) per patient, for the array path.

    >>> patient_matrix([PatientRecord("pt-1", {"age_band": "<65"}, ("copd",))], ("age_band", "diagnoses")).tolist()
    [[0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]]
    """
    columns = patient_columns(inputs)
    context = PatientContext(inputs)
    rows = []
    for record in records:
        context.update(record)
        x = context.inputs(record.patient_id)
        rows.append([x.get(name, np.nan) for name in columns])
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(columns))


class PatientContext:
    """The ``inputs`` (see :data:`INPUT_KINDS`) of every known patient, joined to their feature rows.

    A patient whose record has not arrived gets no patient inputs, and one whose record says
    nothing of conditions no diagnosis inputs: the model then scores from what it has (a scaled
    absent input counts as the average patient), rather than as a patient known to have none.
    """

    def __init__(self, inputs: Collection[str] = DEFAULT_INPUTS) -> None:
        unknown = set(inputs) - set(INPUT_KINDS)
        if unknown:
            raise ValueError(f"unknown patient inputs {sorted(unknown)}; known: {INPUT_KINDS}")
        self.kinds = tuple(k for k in INPUT_KINDS if k in inputs)
        self._inputs: dict[str, dict[str, float]] = {}

    def __len__(self) -> int:
        return len(self._inputs)

    def update(self, record: PatientRecord) -> None:
        """The latest record of a patient wins."""
        inputs = patient_features(record.conditions if "diagnoses" in self.kinds else None,
                                  record.groups.get("age_band") if "age_band" in self.kinds else None)
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
