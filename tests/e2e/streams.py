"""Deterministic device streams for end-to-end tests, and what the database must hold after them.

A stream is a few patients sending five vitals a minute (heart rate every 5 s), one message per
patient and minute, keyed by patient. Minutes can be published in phases (before, during and
after an outage), and :func:`expected_features` says exactly which ``features`` rows the
whole stream must produce.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
from kafka import KafkaProducer

from kernel.settings import Settings
from kernel.wire import encode_device_message

START_MS = 1_767_571_200_000  # 2026-01-05T00:00Z

FeatureKey = tuple[str, str, int]
FeatureValue = tuple[int, float, float, float]


def readings(patient: int, minute: int) -> list[tuple[str, int, float]]:
    """Five vitals a minute; heart rate every 5 s. Values vary by patient and minute."""
    t0 = START_MS + minute * 60_000
    rng = np.random.default_rng(patient * 1000 + minute)
    hr = [("heart_rate", t0 + k * 5_000, float(round(70 + 10 * patient + rng.normal(0, 3), 1))) for k in range(12)]
    return hr + [
        ("respiratory_rate", t0 + 10_000, 14.0 + patient * 2 + minute % 3),
        ("oxygen_saturation", t0 + 20_000, 97.0 - patient),
        ("body_temperature", t0 + 30_000, 36.8 + 0.3 * patient),
        ("systolic_blood_pressure", t0 + 40_000, 125.0 - 8 * patient),
    ]


@dataclass(frozen=True)
class Stream:
    """``patients`` patients over ``minutes`` minutes of event time."""

    patients: int = 5
    minutes: int = 8

    @property
    def patient_ids(self) -> list[str]:
        return [f"pt-{i:04x}" for i in range(self.patients)]

    @property
    def windows(self) -> int:
        """Patient windows (and NEWS2 scores) the whole stream produces."""
        return self.patients * self.minutes

    def publish(self, settings: Settings, minutes: Iterable[int]) -> int:
        """Send the given minutes' messages (all patients) and wait for the broker; return how many."""
        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        sent = 0
        for minute in minutes:
            sent_at = START_MS + (minute + 1) * 60_000
            for p, patient in enumerate(self.patient_ids):
                producer.send(settings.readings_topic, key=patient.encode(), timestamp_ms=sent_at,
                              value=encode_device_message(device_id=f"dev-{p}", patient_id=patient, seq=minute,
                                                          sent_at=sent_at, readings=readings(p, minute)))
                sent += 1
        producer.flush()
        producer.close()
        return sent

    def expected_features(self) -> dict[FeatureKey, FeatureValue]:
        """Every ``features`` row of the whole stream: (n, mean, min, max) per patient, metric, window."""
        values: dict[FeatureKey, list[float]] = defaultdict(list)
        for minute in range(self.minutes):
            for p, patient in enumerate(self.patient_ids):
                for metric, t, value in readings(p, minute):
                    values[(patient, metric, t - t % 60_000)].append(value)
        return {key: (len(v), float(np.mean(v)), min(v), max(v)) for key, v in values.items()}


def feature_rows(settings: Settings) -> dict[FeatureKey, FeatureValue]:
    """The ``features`` table, keyed like :meth:`Stream.expected_features`."""
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute("SELECT patient_id, metric, (extract(epoch FROM window_start) * 1000)::bigint, "
                            "n, mean, min, max FROM features").fetchall()
    return {(r[0], r[1], int(r[2])): (int(r[3]), float(r[4]), float(r[5]), float(r[6])) for r in rows}


def count(settings: Settings, table: str) -> int:
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608 - fixed names
        assert row is not None
        return int(row[0])


def score_keys(settings: Settings) -> list[tuple[str, str, int]]:
    """(patient, model, window start ms) of every score, sorted: duplicates would show twice."""
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute("SELECT patient_id, model_name, (extract(epoch FROM window_start) * 1000)::bigint "
                            "FROM risk_scores ORDER BY 1, 2, 3").fetchall()
    return [(r[0], r[1], int(r[2])) for r in rows]


def assert_features_equal(actual: dict[FeatureKey, FeatureValue], expected: dict[FeatureKey, FeatureValue]) -> None:
    """Same keys (none missing, none extra); same counts, extremes and (to 1e-12) means."""
    missing, extra = set(expected) - set(actual), set(actual) - set(expected)
    assert not missing and not extra, (f"{len(missing)} missing, e.g. {sorted(missing)[:8]}; "
                                       f"{len(extra)} extra, e.g. {sorted(extra)[:8]}")
    for key, (n, mean, low, high) in expected.items():
        got = actual[key]
        assert (got[0], got[2], got[3]) == (n, low, high), key
        assert abs(got[1] - mean) <= 1e-12 * max(1.0, abs(mean)), key


def wait_until(predicate: Callable[[], bool], *, timeout_s: float, what: str, poll_s: float = 0.25,
               log: Path | None = None) -> None:
    """Poll ``predicate`` until it holds; on timeout fail with ``what`` and the tail of ``log``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll_s)
    tail = f"\n{log.read_text(errors='replace')[-4000:]}" if log is not None and log.exists() else ""
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}{tail}")
