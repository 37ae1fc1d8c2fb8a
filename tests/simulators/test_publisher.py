"""What the simulator publishes besides readings: the patients' subgroups and diagnoses."""

from __future__ import annotations

import json

from simulators.cohort import CohortConfig


def test_patients_are_published_with_their_subgroups_and_diagnoses_only() -> None:
    """The patients feed: coarse bands and enrolment diagnoses keyed by pseudonym, nothing else."""
    from simulators.cohort import population
    from simulators.kafka_publisher import publish_patients
    from kernel.settings import Settings
    from kernel.wire import decode_patient

    class Collect:
        def __init__(self) -> None:
            self.sent: list[tuple[str, bytes, bytes]] = []

        def send(self, topic: str, *, key: bytes, value: bytes) -> None:
            self.sent.append((topic, key, value))

        def flush(self) -> None:
            pass

    config = CohortConfig(patients=20, seed=4, duration_ms=60_000)
    producer = Collect()
    assert publish_patients(population(config), settings=Settings(), producer=producer) == 20
    for (topic, key, value), patient in zip(producer.sent, population(config)):
        assert topic == "vitals.patients" and key.decode() == patient.patient_id
        record = decode_patient(value)
        assert record.patient_id == patient.patient_id and set(record.groups) == {"sex", "age_band", "skin_tone"}
        assert record.conditions == patient.conditions
        assert set(json.loads(value)) == {"schema", "patient_id", "sex", "age_band", "skin_tone", "conditions"}
