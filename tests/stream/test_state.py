"""The state store protocol (stream/state.py): DictStore's semantics, and the core's writes through any
store — every key in the partition of the readings it summarises, the watermark record last."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kernel.wire import encode_device_message
from stream.pipeline import VitalsPipeline
from stream.state import DictStore, StateStore
START = 1_767_571_200_000
MINUTE = 60_000


class RecordingStore(DictStore):
    """A DictStore that keeps every write, with the partition it named."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, int, str]] = []  # (put or delete, partition, key)

    def put(self, partition: int, key: str, value: bytes) -> None:
        self.writes.append(("put", partition, key))
        super().put(partition, key, value)

    def delete(self, partition: int, key: str) -> None:
        self.writes.append(("delete", partition, key))
        super().delete(partition, key)


@given(ops=st.lists(st.tuples(st.sampled_from(["put", "delete"]), st.integers(0, 5), st.sampled_from("abc"),
                              st.binary(max_size=8)), max_size=30))
def test_a_dict_store_reads_back_the_last_write_of_each_key(ops: list[tuple[str, int, str, bytes]]) -> None:
    store: StateStore = DictStore()
    expected: dict[str, bytes] = {}
    for op, partition, key, value in ops:
        if op == "put":
            store.put(partition, key, value)
            expected[key] = value
        else:
            store.delete(partition, key)  # deleting a missing key is no error
            expected.pop(key, None)
    assert {k: store.get(k) for k in "abc"} == {k: expected.get(k) for k in "abc"}


def _send(core: VitalsPipeline, partition: int, patient: str, minute: int, offset: int) -> None:
    t = START + minute * MINUTE
    raw = encode_device_message(device_id=f"dev-{patient}", patient_id=patient, seq=offset, sent_at=t,
                                readings=[("heart_rate", t, 70.0)])
    core.on_message(raw, partition=partition, offset=offset, record_ts_ms=t)


def test_every_write_names_the_partition_of_its_readings_and_the_watermark_comes_last() -> None:
    store = RecordingStore()
    core = VitalsPipeline(window_ms=MINUTE, grace_ms=0, max_future_ms=MINUTE, carry_ms=3_600_000,
                          patient_idle_ms=20 * MINUTE, store=store)
    for minute in range(3):
        _send(core, 0, "pt-a", minute, offset=minute)
        _send(core, 3, "pt-b", minute, offset=minute)
    for partition in (0, 3):
        writes = core.checkpoint(partition)
        assert writes[-1][0] == f"w:{partition}"
        core.save(partition, writes)
    assert sorted(store.writes) == [("put", 0, "p:pt-a"), ("put", 0, "w:0"), ("put", 3, "p:pt-b"), ("put", 3, "w:3")]
    assert store.writes[1] == ("put", 0, "w:0") and store.writes[-1] == ("put", 3, "w:3")


SETTINGS = {"window_ms": MINUTE, "grace_ms": 0, "max_future_ms": MINUTE, "carry_ms": 3_600_000,
            "patient_idle_ms": 20 * MINUTE}


def test_a_restart_reads_a_patients_state_back_from_the_store() -> None:
    store = RecordingStore()
    core = VitalsPipeline(**SETTINGS, store=store)
    _send(core, 2, "pt-a", 0, offset=0)
    _send(core, 2, "pt-a", 1, offset=1)  # closes minute 0
    core.save(2, core.checkpoint(2))
    assert store.get("p:pt-a") is not None and store.get("w:2") is not None
    restarted = VitalsPipeline(**SETTINGS, store=store)
    low = core.low_offset(2)
    assert low == 1
    _send(restarted, 2, "pt-a", 1, offset=low)  # the replay from the committed offset
    _send(restarted, 2, "pt-a", 2, offset=2)  # closes minute 1, on top of the saved state
    state = restarted.features.patients["pt-a"]
    assert state.last_reading_ms == START + 2 * MINUTE
    assert state.baseline["heart_rate"][2] == 2.0, "the minute closed before the restart is still counted"
    assert restarted.watermark_ms(2) == START + 2 * MINUTE


def test_a_patient_gone_idle_is_deleted_from_its_partition() -> None:
    store = RecordingStore()
    core = VitalsPipeline(**SETTINGS, store=store)
    _send(core, 2, "pt-a", 0, offset=0)
    for minute in range(1, 30):  # pt-a goes silent past patient_idle_ms while pt-b keeps the watermark moving
        _send(core, 2, "pt-b", minute, offset=minute)
    core.save(2, core.checkpoint(2))
    assert ("delete", 2, "p:pt-a") in store.writes and store.get("p:pt-a") is None
    assert store.get("p:pt-b") is not None
