"""``vitalrisk simulate``: publish a seeded cohort's device messages and outcomes to Kafka."""

from __future__ import annotations

import sys

from simulators.cohort import CohortConfig, simulate
from simulators.kafka_publisher import PublishReport, make_producer, publish
from stream.settings import Settings

MS_PER_MINUTE = 60_000


def progress_line(report: PublishReport) -> str:
    """One status line: messages, readings, achieved rate and errors.

    >>> progress_line(PublishReport(messages=10, readings=150, errors=0, seconds=2.0))
    'sent 10 messages, 150 readings (75 readings/s), 0 errors'
    """
    return (f"sent {report.messages:,} messages, {report.readings:,} readings "
            f"({report.readings_per_s:,.0f} readings/s), {report.errors:,} errors")


def run_simulate(settings: Settings, *, patients: int, minutes: int, seed: int, speed: float | None) -> int:
    """Publish ``minutes`` of simulated time for ``patients`` patients; print progress and a report."""
    config = CohortConfig(patients=patients, seed=seed, duration_ms=minutes * MS_PER_MINUTE)
    producer = make_producer(settings)
    try:
        report = publish(simulate(config), settings=settings, producer=producer, speed=speed,
                         progress=lambda r: print("\r" + progress_line(r), end="", file=sys.stderr, flush=True))
    finally:
        producer.close()
    print("\r" + progress_line(report), file=sys.stderr)
    print(f"published {report.outcomes:,} outcomes; {minutes} simulated minutes in {report.seconds:.1f} s")
    return 1 if report.errors else 0
