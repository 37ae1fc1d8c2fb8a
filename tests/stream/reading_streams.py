"""Streams of readings for the stream core's tests, and the pipeline they are fed to.

A pipeline with 1-minute windows and 30 s of grace, generated readings of one or two patients
(hypothesis), and a seeded two-and-a-half hours of one patient's readings: shared by
``test_pipeline.py`` and ``test_features.py``.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from stream.pipeline import VitalsPipeline
from stream.state import DictStore

MINUTE = 60_000
GRACE = 30_000
START = 1_767_571_200_000
#: The metrics the streams draw, with the range of their values.
METRICS = {"heart_rate": (40.0, 180.0), "oxygen_saturation": (85.0, 100.0), "respiratory_rate": (8.0, 30.0)}

#: Why the tests of what the core does once per hop of event time fail today (strict xfail: they pass,
#: and so fail, once it is fixed).
Reading = tuple[str, str, int, float]  # (patient, metric, t, value)


def new_pipeline(store: DictStore | None = None) -> VitalsPipeline:
    """The core with 1-minute windows, 30 s of grace and 12 h of NEWS2 carry."""
    return VitalsPipeline(window_ms=MINUTE, grace_ms=GRACE, max_future_ms=10 * MINUTE, carry_ms=12 * 3_600_000,
                          store=store)


@st.composite
def readings(draw: st.DrawFn, max_minutes: int = 6) -> list[Reading]:
    """(patient, metric, t, value) readings of one or two patients over a few minutes."""
    n = draw(st.integers(1, 60))
    out = []
    for _ in range(n):
        patient = draw(st.sampled_from(["pt-a", "pt-b"]))
        metric = draw(st.sampled_from(sorted(METRICS)))
        lo, hi = METRICS[metric]
        t = START + draw(st.integers(0, max_minutes * MINUTE - 1))
        value = draw(st.floats(lo, hi, allow_nan=False).map(lambda v: round(v, 1)))
        out.append((patient, metric, t, value))
    return out


def stream_of_150_minutes(seed: int) -> list[Reading]:
    """150 minutes of patient ``pt-a``'s readings (0-5 a minute, any metric), in time order."""
    rng = np.random.default_rng(seed)
    out = []
    for minute in range(150):
        for _ in range(int(rng.integers(0, 6))):
            metric = str(rng.choice(sorted(METRICS)))
            lo, hi = METRICS[metric]
            out.append(("pt-a", metric, START + minute * MINUTE + int(rng.integers(0, MINUTE)),
                        round(float(rng.uniform(lo, hi)), 1)))
    return sorted(out, key=lambda e: e[2])
