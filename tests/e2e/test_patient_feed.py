"""The worker's patient feed on the real broker: records published while it runs reach the scorer's context."""

from __future__ import annotations

import asyncio
import time

import pytest
from kafka import KafkaProducer

from models.patient_context import PatientContext
from models.patient_topic import PatientFeed, read_patients
from kernel.settings import Settings
from kernel.wire import PatientRecord, encode_patient

pytestmark = pytest.mark.integration


def _publish(settings: Settings, records: list[PatientRecord | str]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    for record in records:
        if isinstance(record, str):  # a tombstone: the patient left the programme
            producer.send(settings.patients_topic, key=record.encode(), value=None)
        else:
            producer.send(settings.patients_topic, key=record.patient_id.encode(), value=encode_patient(record))
    producer.flush()
    producer.close()


async def _follow(feed: PatientFeed, context: PatientContext, until: int, timeout_s: float = 20.0) -> None:
    task = asyncio.create_task(feed.run())
    try:
        deadline = time.monotonic() + timeout_s
        while len(context) != until:
            assert time.monotonic() < deadline, f"the feed delivered {len(context)} of {until} patients"
            assert not task.done(), task.exception()
            await asyncio.sleep(0.1)
    finally:
        task.cancel()


def test_records_published_while_the_worker_runs_reach_its_context(isolated: Settings) -> None:
    _publish(isolated, [PatientRecord(f"pt-{i}", {"age_band": "75+"}) for i in range(5)])
    context = PatientContext()
    offsets = read_patients(isolated, context)
    assert len(context) == 5 and sum(offsets.values()) == 5

    async def scenario() -> None:
        feed = PatientFeed(isolated, context, start_offsets=offsets)
        task = asyncio.create_task(_follow(feed, context, until=9))
        await asyncio.sleep(1.0)  # the feed is following the tail by now
        _publish(isolated, [*(PatientRecord(f"pt-{i}", {"age_band": "<65"}) for i in range(5, 10)), "pt-0"])
        await task

    asyncio.run(scenario())
    assert context.inputs("pt-7")["age_<65"] == 1.0 and context.inputs("pt-0") == {}


def test_a_topic_created_after_the_worker_started_is_read_from_its_start(isolated: Settings) -> None:
    settings = isolated.model_copy(update={"patients_topic": f"{isolated.patients_topic}.late"})
    context = PatientContext()
    assert read_patients(settings, context) == {}

    async def scenario() -> None:
        feed = PatientFeed(settings, context, start_offsets={})
        task = asyncio.create_task(_follow(feed, context, until=3))
        await asyncio.sleep(1.0)
        _publish(settings, [PatientRecord(f"pt-{i}", {"age_band": "65-74"}) for i in range(3)])  # auto-created
        await task

    asyncio.run(scenario())
