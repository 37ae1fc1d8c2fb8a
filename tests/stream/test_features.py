"""Per-patient state stays within its bound with the default windows."""

from __future__ import annotations

import json

from simulators.cohort import CohortConfig, simulate
from stream.features import PatientState
from stream.pipeline import VitalsPipeline
from kernel.settings import Settings

STATE_BOUND_BYTES = 4096


def test_state_per_active_patient_is_at_most_4_kb_and_round_trips() -> None:
    config = CohortConfig(patients=30, seed=5, duration_ms=3 * 3_600_000)
    pipeline = VitalsPipeline.from_settings(Settings())
    for offset, message in enumerate(m for m in simulate(config) if m.kind == "reading"):
        pipeline.on_message(json.dumps(message.payload).encode(), partition=0, offset=offset,
                            record_ts_ms=message.sent_ms)
    sizes = pipeline.state_bytes()
    assert len(sizes) == 30
    assert max(sizes.values()) <= STATE_BOUND_BYTES, max(sizes.values())
    for state in pipeline.features.patients.values():
        assert PatientState.from_bytes(state.to_bytes()) == state
        assert len(state.panes) <= 13, "an hour of 5-minute panes plus the one filling"
