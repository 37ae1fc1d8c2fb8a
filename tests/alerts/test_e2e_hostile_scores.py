"""Hostile score records on the real broker: the alerter pages exactly as for the clean scores,
never exits, commits to the end of the topic, and dead-letters every hostile record with a reason.

The scores topic is written by workers, but anyone who reaches the broker could write to it (and a
buggy worker could): the alerter decodes with the same total reader as the worker.
"""

from __future__ import annotations

import json

import pytest
from kafka import KafkaProducer

from kernel.wire import encode_score
from stream.deadletter_topic import read_all
from tests.alerts.conftest import AlertingStack, news2_score, read_jsonl, wait_for
from tests.conftest import committed_to_end

pytestmark = pytest.mark.integration

PATIENT = "pt-hostile01"
CLEAN = [news2_score(PATIENT, m, n, red=n >= 7) for m, n in [(1, 2), (2, 3), (3, 5), (4, 7), (5, 8)]]


def _hostile() -> list[tuple[bytes | None, bytes | None]]:
    """(key, value) of hostile score records, each of which must be refused."""
    good = json.loads(encode_score(CLEAN[0]))
    out: list[tuple[bytes | None, bytes | None]] = [
        (b"x", b"[" * 100_000 + b"]" * 100_000),
        (b"x", b"\xff\xfe not json"),
        (b"x", None),
        (b"x", b""),
        (b"x", json.dumps({**good, "score": 7.5}).encode()),
        (b"x", json.dumps({**good, "news2_total": 99}).encode()),
        (b"x", json.dumps({**good, "patient_id": "pt\nINFO forged"}).encode()),
        (b"x", json.dumps({**good, "patient_id": "p" * 10_000}).encode()),
        (b"x", json.dumps({**good, "window_start": int("9" * 30)}).encode()),
        (b"x", json.dumps(good).encode().replace(b'"score"', b'"score": 0.1, "score"', 1)),
        (b"x", json.dumps({**good, "schema": "vitalrisk.score/99"}).encode()),
        (b"x", b"{" + b'"a": 1, ' * 60_000 + b'"b": 2}'),  # 480 KB, the same key 60,000 times
    ]
    # and a flood of well-formed scores for invented, invalid patient ids
    out += [(b"x", json.dumps({**good, "patient_id": f"bad id {i}"}).encode()) for i in range(300)]
    return out


def test_hostile_score_records_are_dead_lettered_and_pages_stay_right(alerting: AlertingStack) -> None:
    settings = alerting.settings
    hostile = _hostile()
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", max_request_size=4_000_000)
    for i, score in enumerate(CLEAN):  # the clean deterioration, with hostile records between its scores
        for key, value in hostile[i::len(CLEAN)]:
            producer.send(settings.scores_topic, key=key, value=value, partition=0)
        producer.send(settings.scores_topic, key=score.patient_id.encode(), value=encode_score(score), partition=0)
    producer.flush()
    producer.close()

    pager = alerting.start_pager()
    alerter = alerting.start_alerter()
    procs = (pager, alerter)
    pages = wait_for("the firing page", lambda: [r for r in read_jsonl(alerting.record)
                                                 if r["body"]["alerts"][0]["labels"]["patient_id"] == PATIENT],
                     timeout_s=90, procs=procs)
    wait_for("every hostile record's dead letter",
             lambda: len([d for d in read_all(settings) if d.source and d.source[0] == settings.scores_topic])
             >= len(hostile), timeout_s=90, procs=procs)
    wait_for("offsets committed to the end", lambda: committed_to_end(settings, settings.scores_topic, f"{settings.app_id}-alerter"),
             timeout_s=60, procs=procs)

    assert len(pages) == 1 and pages[0]["body"]["alerts"][0]["labels"]["kind"] == "news2_high", pages
    letters = [d for d in read_all(settings) if d.source and d.source[0] == settings.scores_topic]
    assert len(letters) == len(hostile), "one dead letter per hostile record, none for the clean scores"
    assert all(d.reason not in ("", "unknown") and d.detail for d in letters), letters[:3]
    assert {d.reason for d in letters} >= {"too_deep", "not_json", "empty", "invalid_id", "impossible_value"}, \
        sorted({d.reason for d in letters})
    assert not any(line.startswith("INFO forged") for line in alerter.tail(1_000_000).splitlines()), \
        "a newline in an id never forges a log line"
    assert alerter.alive() and pager.alive(), "the alerter never exits"
    assert sum(len(d.value) for d in letters) <= sum(len(v or b"") for _, v in hostile) + 1024 * len(letters)
