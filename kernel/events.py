"""Typed, frozen events that travel between the pipeline's stages.

Units are in the field names; on the wire, metric names and units follow
:mod:`kernel.vocabulary`. Nothing past the Faust agent handles raw dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, kw_only=True)
class VitalReading:
    """One validated measurement of one metric for one patient.

    Examples
    --------
    >>> VitalReading(patient_id="pt-1", device_id="dev-1", seq=7, metric="heart_rate", ts_ms=1_700_000_000_000, value=72.0).metric
    'heart_rate'
    """

    patient_id: str
    device_id: str
    seq: int
    metric: str
    ts_ms: int
    value: float


@dataclass(frozen=True, slots=True)
class MetricStats:
    """Summary of one metric's readings inside one window.

    ``std`` is the population standard deviation; ``last`` the value with the latest time
    (ties: the larger value, so arrival order never matters); ``slope_per_min`` the
    least-squares slope of value on time, per minute (0 with fewer than two distinct times);
    ``rmssd`` the root mean square of successive differences in time order (for heart rate, a
    heart-rate-variability proxy; 0 with fewer than two readings).
    """

    count: int
    mean: float
    min: float
    max: float
    std: float = 0.0
    last: float = float("nan")
    slope_per_min: float = 0.0
    rmssd: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowFeatures:
    """All metrics of one patient over one closed event-time window ``[start_ms, end_ms)``."""

    patient_id: str
    start_ms: int
    end_ms: int
    metrics: dict[str, MetricStats]
    #: Per metric: the window mean's deviation from the patient's baseline, in baseline
    #: standard deviations, and the baseline mean itself (empty until the baseline is warm).
    baseline_z: dict[str, float] = field(default_factory=dict)
    baseline_mean: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class RiskScore:
    """A score for one patient and window; names the model and the inputs behind it.

    ``inputs`` are the values the model saw (window means, or the last known value carried
    forward), ``contributions`` how much each input added to the score, and
    ``missing_inputs`` the model inputs that were unavailable (scored as normal).
    """

    patient_id: str
    window_start_ms: int
    window_end_ms: int
    model_name: str
    model_version: str
    score: float
    news2_total: int
    news2_band: str
    inputs: dict[str, float]
    contributions: dict[str, float]
    missing_inputs: tuple[str, ...] = ()
    #: Risk per condition (``any``, ``hf_decompensation``, ``copd_exacerbation``, ``infection``, ``af_episode``),
    #: probabilities in [0, 1]; empty for NEWS2, which scores no condition in particular.
    risks: dict[str, float] = field(default_factory=dict)
    #: NEWS2 points per parameter for the same window (the RCP's "single parameter scoring 3").
    news2_subscores: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class OpsEvent:
    """An operational event for the ops channel: drift detected, a fairness gap, data stopped.

    ``kind`` is a low-cardinality code (``drift``, ``fairness``, ``data_stopped``); ``subject``
    names what it is about, a model or a pseudonymous id, never a person; ``details`` says what
    and where (one row of ``ops_events``).
    """

    kind: str
    ts_ms: int
    subject: str
    details: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """A refused record, once, with the reason it was refused.

    One per record, however many of its readings were bad: ``payload`` is the record's
    original bytes, ``reasons`` counts its refused readings by reason (empty when the record was
    refused as a whole), ``accepted`` counts the readings of it that were accepted. ``device_id``
    and ``patient_id`` are set when the record got far enough to name valid ones.

    Examples
    --------
    >>> DeadLetter(reason="not_json", detail="bad", payload=b"{").counts
    {'not_json': 1}
    >>> DeadLetter(reason="late", detail="t=1 ...", payload=b"{}", reasons={"late": 2, "impossible_value": 1}, accepted=9).counts
    {'late': 2, 'impossible_value': 1}
    """

    reason: str
    detail: str
    payload: bytes
    reasons: dict[str, int] = field(default_factory=dict)
    accepted: int = 0
    device_id: str | None = None
    patient_id: str | None = None

    @property
    def counts(self) -> dict[str, int]:
        """Refusals by reason: the bad readings', or the record's own as one."""
        return self.reasons or {self.reason: 1}


#: A feature row per patient every 5 minutes of event time (the hop of ``vitals.features``).
HOP_MS = 5 * 60_000


@dataclass(frozen=True, slots=True, kw_only=True)
class FeatureRow:
    """Model input for one patient at one hop boundary ``ts_ms`` (features of ``[ts_ms - 1h, ts_ms)``)."""

    patient_id: str
    ts_ms: int
    x: dict[str, float]
