"""Readings per second the load generator sustains into Kafka, beside Kafka's own producer.

Run: ``.venv/bin/python bench/bench_producer.py [--patients 100000] [--seconds 20] [--rate 50000]
[--bootstrap 127.0.0.1:29092]``

1. *generator alone*: :class:`simulators.load.LoadCohort` making and encoding messages, no Kafka;
2. *load generator, unpaced*: the same messages through kafka-python (acks=all, the
   simulators' linger and batch size, ``--compression``, lz4 by default as in
   ``make_producer``) as fast as they go: the highest sustained rate;
3. *load generator, paced*: held at ``--rate``, as ``vitalrisk simulate --rate`` does;
4. *the limit*: Kafka's ``org.apache.kafka.tools.ProducerPerformance`` (the Java client, from the
   broker's own jars) with the same acks, compression, linger and batch size, once with random
   records of the mean device-message size (``--record-size``) and once with real device
   messages (``--payload-file``, so that they compress alike); records/s are converted to
   readings/s with the mean readings per message.

Without ``--bootstrap`` it uses ``VITALS_KAFKA_BOOTSTRAP`` and starts the local broker if it is
not running (and stops it after). Every step writes to a fresh topic, deleted at the end.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kafka.admin import KafkaAdminClient, NewTopic

from infra.kafka import LOG4J_CONFIG, LocalKafka, bootstrap_address
from infra.processes import port_open
from simulators.kafka_publisher import BATCH_SIZE_BYTES, LINGER_MS, KafkaSender, make_producer
from simulators.load import LoadCohort, LoadReport, run_load
from simulators.run import few_gc_collections
from kernel.kafka_security import kafka_python_options
from kernel.settings import Settings

PAYLOAD_SAMPLE = 20_000  # distinct device messages in ProducerPerformance's payload file


def load_average() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def generator_alone(patients: int, seconds: float) -> tuple[float, float, int]:
    """(readings/s, mean readings per message, mean message bytes) of generation alone."""
    cohort = LoadCohort(patients, seed=1)
    records = cohort.records()
    messages = readings = size = 0
    with few_gc_collections():
        start = time.perf_counter()
        deadline = start + seconds
        for record in records:
            messages += 1
            readings += record.readings
            size += len(record.value)
            if messages % 1024 == 0 and time.perf_counter() >= deadline:
                break
        elapsed = time.perf_counter() - start
    return readings / elapsed, readings / messages, round(size / messages)


def generator_into_kafka(settings: Settings, topic: str, patients: int, rate: float | None,
                         seconds: float, compression: str) -> LoadReport:
    """One run of the load generator as ``vitalrisk simulate --rate`` makes it."""
    cohort = LoadCohort(patients, seed=2, max_span_ms=min(settings.grace_ms, 60_000))
    producer = make_producer(settings, compression=compression)
    try:
        sender = KafkaSender(producer, topic)
        with few_gc_collections():
            return run_load(cohort.records(rate=rate), sender, rate=rate, duration_s=seconds)
    finally:
        producer.close(timeout=10)


def producer_performance(classpath: str, bootstrap: str, topic: str, records: int, compression: str, *,
                         record_size: int | None = None, payload_file: Path | None = None) -> float:
    """Records/s of Kafka's ProducerPerformance with the simulators' producer settings."""
    argv = ["java", "-Xmx512m", f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", "-cp", classpath,
            "org.apache.kafka.tools.ProducerPerformance", "--topic", topic, "--num-records", str(records),
            "--throughput", "-1"]
    if payload_file is not None:
        argv += ["--payload-file", str(payload_file), "--payload-delimiter", "\n"]
    else:
        argv += ["--record-size", str(record_size)]
    argv += ["--producer-props", f"bootstrap.servers={bootstrap}", "acks=all", f"compression.type={compression}",
             f"linger.ms={LINGER_MS}", f"batch.size={BATCH_SIZE_BYTES}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    summary = [line for line in done.stdout.splitlines() if re.match(r"^\d+ records sent", line)]
    if done.returncode != 0 or not summary:
        raise RuntimeError(f"ProducerPerformance failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return float(re.search(r"([0-9.]+) records/sec", summary[-1]).group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each load generator run")
    parser.add_argument("--rate", type=float, default=50_000.0, help="target of the paced run, readings/s")
    parser.add_argument("--records", type=int, default=300_000, help="records per ProducerPerformance run")
    parser.add_argument("--bootstrap", default=None, help="an already running broker (default: the local one)")
    parser.add_argument("--compression", default="lz4",
                        help="codec for both producers (default lz4, as make_producer)")
    args = parser.parse_args()

    base = Settings() if args.bootstrap is None else Settings(kafka_bootstrap=args.bootstrap)
    kafka = LocalKafka(base)
    started = False
    if not port_open(*bootstrap_address(base)):
        if args.bootstrap is not None:
            raise SystemExit(f"no broker at {args.bootstrap}")
        kafka.start()
        started = True
    classpath = kafka.classpath()  # the broker's jars, resolved (and cached) by infra.kafka
    if "kafka-tools-" not in classpath:
        raise SystemExit("kafka-tools is not on the broker's classpath (infra/kafka/pom.xml)")

    tag = uuid.uuid4().hex[:8]
    topics = {step: f"bench-producer-{tag}.{step}" for step in ("unpaced", "paced", "java-random", "java-real")}
    admin = KafkaAdminClient(bootstrap_servers=base.kafka_bootstrap, client_id="bench-producer",
                             **kafka_python_options(base))
    admin.create_topics([NewTopic(t, num_partitions=base.partitions, replication_factor=1) for t in topics.values()])
    settings = base.model_copy(update={"readings_topic": topics["unpaced"]})
    loads: list[str] = [load_average()]
    try:
        alone, per_message, size = generator_alone(args.patients, min(args.seconds, 10.0))
        loads.append(load_average())
        unpaced = generator_into_kafka(settings, topics["unpaced"], args.patients, None, args.seconds,
                                       args.compression)
        loads.append(load_average())
        paced = generator_into_kafka(settings, topics["paced"], args.patients, args.rate, args.seconds,
                                     args.compression)
        loads.append(load_average())
        java_random = producer_performance(classpath, base.kafka_bootstrap, topics["java-random"], args.records,
                                           args.compression, record_size=size)
        loads.append(load_average())
        with tempfile.TemporaryDirectory() as tmp:
            payloads = Path(tmp) / "messages.txt"
            sample = itertools.islice(LoadCohort(min(args.patients, PAYLOAD_SAMPLE), seed=3).records(), PAYLOAD_SAMPLE)
            payloads.write_bytes(b"\n".join(r.value for r in sample))
            java_real = producer_performance(classpath, base.kafka_bootstrap, topics["java-real"], args.records,
                                             args.compression, payload_file=payloads)
        loads.append(load_average())
    finally:
        admin.delete_topics(list(topics.values()))
        admin.close()
        if started:
            kafka.stop()

    from kafka.record import util as kafka_record_util

    checksums = "C (crc32c package)" if kafka_record_util.crc32c_c is not None else "pure Python"
    limit = java_real * per_message
    rows = [
        ("ProducerPerformance, our messages (the limit)", java_real, limit),
        ("ProducerPerformance, random bytes of that size", java_random, java_random * per_message),
        ("load generator, unpaced: mean", unpaced.mean_rate / per_message, unpaced.mean_rate),
        ("load generator, unpaced: per-second p50", (unpaced.rate_percentile(50) or 0) / per_message,
         unpaced.rate_percentile(50) or 0.0),
        (f"load generator at {args.rate:,.0f}/s: mean", paced.mean_rate / per_message, paced.mean_rate),
        (f"load generator at {args.rate:,.0f}/s: per-second p1", (paced.rate_percentile(1) or 0) / per_message,
         paced.rate_percentile(1) or 0.0),
        ("generator alone, no Kafka", alone / per_message, alone),
    ]
    print(f"producer benchmark: {args.patients:,} patients, {per_message:.1f} readings and {size:,} bytes per "
          f"message, {args.compression}, acks=all, linger.ms={LINGER_MS}, batch.size={BATCH_SIZE_BYTES}; "
          f"{os.cpu_count()} cores; kafka-python {checksums} checksums")
    print(f"  load average before and after each step: {', '.join(loads)}")
    print(f"  {'path':<50}{'messages/s':>12}{'readings/s':>12}{'vs limit':>10}")
    for name, messages_s, readings_s in rows:
        print(f"  {name:<50}{messages_s:>12,.0f}{readings_s:>12,.0f}{readings_s / limit:>10.2f}")
    split = unpaced.elapsed_s or 1.0
    print(f"  unpaced time: generating {unpaced.generate_s / split:.0%}, in producer.send {unpaced.send_s / split:.0%} "
          f"(waiting for acks {unpaced.broker_wait_s / split:.0%}); process CPU {unpaced.cpu_s / split:.2f} cores "
          f"unpaced, {paced.cpu_s / (paced.elapsed_s or 1.0):.2f} paced; errors {unpaced.errors + paced.errors}")
    shortfall = paced.shortfall()
    print("  " + (shortfall.line() if shortfall else f"the paced run held {args.rate:,.0f} readings/s "
                                                       f"({paced.mean_rate / args.rate:.1%} of the target)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
