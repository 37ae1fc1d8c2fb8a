"""The array path of ``vitalrisk evaluate``: the pipeline's feature rows, from the simulator's arrays."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream.cohort_features import UnsupportedCohort, cohort_hops, shard_hops, shards, supports
from simulators.cohort import CohortConfig, population, simulate
from simulators.deterioration import Incidence
from simulators.devices import DeviceSchedule
from simulators.faults import FaultRates
from stream.batch_features import feature_columns, row_dict
from stream.features import FeatureEngine
from stream.pipeline import VitalsPipeline
from kernel.settings import Settings

HOUR = 3_600_000


def _config(**kw: object) -> CohortConfig:
    # A cuff measurement in the first hours, so blood pressure and the cuff's pulse are covered.
    return CohortConfig(patients=6, seed=11, duration_ms=3 * HOUR, incidence=Incidence().scaled(80.0),
                        devices=DeviceSchedule(bp_cuff_times_h=(1.0, 2.0)), **kw)  # type: ignore[arg-type]


def _pipeline_rows(config: CohortConfig) -> dict[tuple[str, int], dict[str, float]]:
    """What evaluate's message path computes: wire bytes -> VitalsPipeline -> FeatureEngine."""
    pipeline, engine = VitalsPipeline.from_settings(Settings()), FeatureEngine()
    rows = {}
    windows = []
    for offset, m in enumerate(simulate(config)):
        if m.kind == "reading":
            raw = json.dumps(m.payload).encode()
            windows += pipeline.on_message(raw, partition=0, offset=offset, record_ts_ms=m.sent_ms).windows
    windows += pipeline.close_partition(0).windows
    for w in windows:
        for r in engine.on_window(w, partition=0).rows:
            rows[(r.patient_id, r.ts_ms)] = r.x
    return rows


def test_array_path_gives_the_pipelines_feature_rows() -> None:
    config = _config()
    expected = _pipeline_rows(config)
    ids = [p.patient_id for p in population(config)]
    columns = feature_columns()
    got = {(ids[i], ts): row_dict(columns, x[i]) for ts, x in cohort_hops(config, processes=0) for i in range(len(x))}
    assert got.keys() == expected.keys()
    assert any("systolic_blood_pressure_last" in x for x in got.values())  # the cuff was exercised
    assert any("heart_rate_z_60m" in x for x in got.values())  # and warm baselines
    for key, x in expected.items():
        assert got[key].keys() == x.keys(), key
        names = sorted(x)
        # rtol 1e-7: FeatureEngine's trend regresses on epoch hours (~490,000), which costs it about
        # eight digits; the batch engine regresses on hours before the hop.
        assert np.allclose([got[key][n] for n in names], [x[n] for n in names], rtol=1e-7, atol=1e-8), key


def test_worker_processes_give_the_same_floats() -> None:
    config = _config()
    alone = list(cohort_hops(config, processes=0))
    for processes in (1, 2):
        split = list(cohort_hops(config, processes=processes))
        assert [ts for ts, _ in split] == [ts for ts, _ in alone]
        assert all(np.array_equal(a, b, equal_nan=True) for (_, a), (_, b) in zip(alone, split, strict=True))


def test_a_shard_is_the_same_rows_as_in_the_whole_cohort() -> None:
    config = _config()
    whole = list(shard_hops(config, 0, 6))
    part = list(shard_hops(config, 2, 5))
    assert all(np.array_equal(w[2:5], p, equal_nan=True) for (_, w), (_, p) in zip(whole, part, strict=True))


def test_faults_need_the_message_path() -> None:
    config = _config(faults=FaultRates.typical())
    assert not supports(config)
    with pytest.raises(UnsupportedCohort):
        next(shard_hops(config, 0, 6))


def test_shards_cover_every_patient_once() -> None:
    for n, parts in ((1, 2), (7, 3), (1000, 2)):
        bounds = shards(n, parts)
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
