"""A feed that cannot start while the broker is away waits and retries, logging the outage twice at most."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka.errors import KafkaConnectionError

from kernel.backoff import Backoff
from models.patient_topic import start_retrying


def test_a_start_is_retried_until_the_broker_answers(caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[int] = []

    async def start() -> list[int]:
        attempts.append(len(attempts))
        if len(attempts) <= 3:
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9092)]")
        return [0, 1]

    with caplog.at_level(logging.INFO):
        got = asyncio.run(start_retrying(start, "patient feed", backoff=Backoff(first_s=0.01, max_s=0.02)))
    assert got == [0, 1] and len(attempts) == 4
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["patient feed: Kafka unavailable (KafkaConnectionError); retrying",
                     "patient feed: started after 3 failed attempts"]
