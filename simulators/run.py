"""``vitalrisk simulate``: publish a seeded cohort's device messages and outcomes to Kafka.

Two modes:

- **cohort** (default): ``--minutes`` of simulated time for ``--patients``, as fast as
  possible or at ``--speed`` × real time, with outcomes; timestamps are the simulated ones.
- **rate** (``--rate R``): the load generator (:mod:`simulators.load`) holds ``R``
  readings/s of device messages stamped with the current time, until Ctrl-C, ``--duration``
  seconds, or ``--minutes`` rounds (simulated minutes), then prints a report. With
  ``--via-gateway URL --tokens FILE`` every device uploads to the ingest gateway with its own
  token (:class:`simulators.gateway_publisher.GatewaySender`) instead.
"""

from __future__ import annotations

import dataclasses
import gc
import time
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from simulators.cohort import CohortConfig, population, simulate
from simulators.gateway_publisher import GatewaySender
from simulators.kafka_publisher import KafkaSender, PublishReport, make_producer, publish, publish_patients
from simulators.load import LoadCohort, LoadReport, format_report, run_load
from simulators.load import progress_line as load_progress_line
from kernel.settings import Settings

MS_PER_MINUTE = 60_000
DEFAULT_MINUTES = 60
#: How long a load run waits for the last acknowledgements before it reports them missing.
FLUSH_TIMEOUT_S = 30.0
EXIT_INTERRUPTED = 130


def progress_line(report: PublishReport) -> str:
    """One status line: messages, readings, achieved rate and errors.

    >>> progress_line(PublishReport(messages=10, readings=150, errors=0, seconds=2.0))
    'sent 10 messages, 150 readings (75 readings/s), 0 errors'
    """
    return (f"sent {report.messages:,} messages, {report.readings:,} readings "
            f"({report.readings_per_s:,.0f} readings/s), {report.errors:,} errors")


def run_simulate(settings: Settings, *, patients: int, minutes: int | None, seed: int, speed: float | None,
                 rate: float | None = None, duration_s: float | None = None, start_now: bool = False,
                 sender: GatewaySender | None = None) -> int:
    """Publish a cohort (``rate`` is ``None``) or run the load generator at ``rate`` readings/s.

    In cohort mode ``minutes`` defaults to 60 simulated minutes. In rate mode it bounds the
    rounds (``None``: none), and the exit status is 130 after Ctrl-C, 1 when messages
    failed or went unacknowledged, 0 otherwise, also when the target was out of reach
    (the report says so). ``sender``, in rate mode only: send through the gateway instead.
    """
    if rate is not None:
        return run_rate(settings, patients=patients, rate=rate, seed=seed, minutes=minutes, duration_s=duration_s,
                        sender=sender)
    if sender is not None:
        raise ValueError("only the load generator (rate mode) sends through the gateway")
    minutes = DEFAULT_MINUTES if minutes is None else minutes
    config = CohortConfig(patients=patients, seed=seed, duration_ms=minutes * MS_PER_MINUTE)
    if start_now:
        config = dataclasses.replace(config, start_ms=int(time.time() * 1000) // MS_PER_MINUTE * MS_PER_MINUTE)
    producer = make_producer(settings)
    try:
        publish_patients(population(config), settings=settings, producer=producer)
        report = publish(simulate(config), settings=settings, producer=producer, speed=speed,
                         progress=lambda r: print("\r" + progress_line(r), end="", file=sys.stderr, flush=True))
    finally:
        producer.close()
    print("\r" + progress_line(report), file=sys.stderr)
    print(f"published {report.outcomes:,} outcomes; {minutes} simulated minutes in {report.seconds:.1f} s")
    return 1 if report.errors else 0


def run_rate(settings: Settings, *, patients: int, rate: float, seed: int = 42, minutes: int | None = None,
             duration_s: float | None = None, sender: GatewaySender | None = None) -> int:
    """Hold ``rate`` readings/s into ``settings.readings_topic`` (through the gateway with ``sender``);
    live progress on stderr, report on stdout."""
    cohort = LoadCohort(patients, seed=seed, max_span_ms=max(1, min(settings.grace_ms, MS_PER_MINUTE)))
    # first: a broker that is down is the run's only line on stderr
    producer = make_producer(settings) if sender is None else None
    where = (f"{settings.readings_topic} at {settings.kafka_bootstrap}" if sender is None
             else f"the gateway at {sender.endpoint}, each device with its own token")
    print(f"load: {patients:,} patients ({cohort.natural_rate:,.0f} readings/s in real time), target "
          f"{rate:,.0f} readings/s: simulated time x{rate / cohort.natural_rate:.2f}; "
          f"to {where}; Ctrl-C stops", file=sys.stderr)
    width = 0

    def show(report: LoadReport) -> None:
        nonlocal width
        line = load_progress_line(report)
        width = max(width, len(line))
        print("\r" + line.ljust(width), end="", file=sys.stderr, flush=True)

    try:
        with few_gc_collections():
            report = run_load(cohort.records(rate=rate, minutes=minutes),
                              sender or KafkaSender(producer, settings.readings_topic), rate=rate,
                              duration_s=duration_s, flush_timeout_s=FLUSH_TIMEOUT_S, progress=show,
                              via_gateway=sender is not None)
    finally:
        if producer is not None:
            producer.close(timeout=5)
    show(report)
    print(file=sys.stderr)
    print(format_report(report, patients=patients))
    if report.interrupted:
        return EXIT_INTERRUPTED
    return 1 if report.errors or report.flush_error else 0


@contextmanager
def few_gc_collections() -> Iterator[None]:
    """Run with the cyclic garbage collector mostly out of the way, then restore it.

    Each send leaves a few short-lived container objects (the producer's futures); with the
    default thresholds the collector runs every few hundred sends and walks everything
    alive, about a tenth of the send loop's time. Nothing in the loop makes cycles that
    need collecting promptly.
    """
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()  # the cohort's long-lived objects are never walked again
    gc.set_threshold(100_000, 50, 1000)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
