"""The gateway's producer hands an upload's records over under one deadline, to the partition every producer picks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from aiokafka.errors import KafkaTimeoutError
from kafka.partitioner import murmur2 as kafka_python_murmur2

from gateway.producer import KafkaRecords
from gateway.service import RECEIVED_HEADER, ProduceFailed, Record
from kernel.settings import Settings

PARTITIONS = 6


@dataclass
class StubProducer:
    """What KafkaRecords asks of AIOKafkaProducer, recorded; ``full_after`` sends, the buffer stays full."""

    full_after: int | None = None
    refuse_after: int | None = None
    sent: list[tuple[bytes, bytes, int, list[tuple[str, bytes]], int]] = field(default_factory=list)

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(PARTITIONS))

    async def send(self, topic: str, *, value: bytes, key: bytes, partition: int, headers: list[tuple[str, bytes]],
                   timestamp_ms: int) -> asyncio.Future[object]:
        if self.full_after is not None and len(self.sent) >= self.full_after:
            await asyncio.sleep(3600)  # waits for room, as aiokafka does while a batch drains
        if self.refuse_after is not None and len(self.sent) >= self.refuse_after:
            raise KafkaTimeoutError("buffer full")
        self.sent.append((key, value, partition, headers, timestamp_ms))
        return asyncio.get_running_loop().create_future()


def _records(*patients: str) -> list[Record]:
    return [Record(patient.encode(), f"message {i}".encode(), 1) for i, patient in enumerate(patients)]


def _submit(stub: StubProducer, records: list[Record], timeout_s: float = 1.0) -> list[asyncio.Future[object]]:
    async def main() -> list[asyncio.Future[object]]:
        sink = KafkaRecords(Settings())
        sink._producer = stub  # the stub stands in for the broker's client
        return await sink.submit(records, received_ms=1_767_571_200_000, timeout_s=timeout_s)
    return asyncio.run(main())


def test_every_record_goes_where_kafka_python_would_put_its_key_stamped_with_the_receive_time() -> None:
    stub = StubProducer()
    records = _records(*[f"pt-{i}" for i in range(40)], "pt-1", "pt-1")
    assert len(_submit(stub, records)) == len(records)
    want = [sorted(range(PARTITIONS))[(kafka_python_murmur2(r.key) & 0x7FFFFFFF) % PARTITIONS] for r in records]
    assert [partition for _, _, partition, _, _ in stub.sent] == want
    assert len(set(want)) == PARTITIONS
    assert {(tuple(h), t) for _, _, _, h, t in stub.sent} == {(((RECEIVED_HEADER, b"1767571200000"),), 1_767_571_200_000)}
    assert [(k, v) for k, v, _, _, _ in stub.sent] == [(r.key, r.value) for r in records]


@pytest.mark.parametrize("stub", [StubProducer(full_after=2), StubProducer(refuse_after=2)], ids=["full", "refused"])
def test_a_handover_cut_short_names_the_records_taken(stub: StubProducer) -> None:
    with pytest.raises(ProduceFailed) as caught:
        _submit(stub, _records("pt-1", "pt-1", "pt-1", "pt-1"), timeout_s=0.05)
    assert len(caught.value.taken) == len(stub.sent) == 2
