"""Readings per second and upload latency through the ingest gateway, beside a direct producer.

Run: ``.venv/bin/python bench/bench_gateway.py [--devices 20] [--rounds 1500] [--batches 10,100]
[--paced-seconds 10] [--profile gateway.txt]``

One real ``vitalrisk gateway`` process (aiohttp, aiokafka with acks=all and idempotence) on a real
Kafka broker, looking device tokens up in a real PostgreSQL; ``--devices`` wrist devices of the
load generator (:class:`simulators.load.LoadCohort`), each enrolled with its own token bound to
its patient (:func:`sinks.devices.enroll`, what ``vitalrisk devices enroll`` runs), upload their
messages concurrently, one upload in flight per device, as a device's client does
(:class:`simulators.gateway_publisher.GatewayProducer`: a JSON array, gzip from 8 KiB).

1. *the limit*: kafka-python (:func:`simulators.kafka_publisher.make_producer`: acks=all, lz4)
   sending the same messages straight to a topic, timed to its last acknowledgement; run before
   and after the gateway rows, the mean is the limit;
2. *native batches*: uploads of N ``vitalrisk.device/1`` messages each (``--batches``, and one
   message per upload), every device as fast as the 202s come back: readings/s from the first
   upload to the last 202, and p50/p99 of upload -> 202 at that saturation;
3. *FHIR Bundle*: the same readings as a ``collection`` Bundle of vital-signs Observations, N
   messages' worth per upload;
4. *paced at 50 %*: for each native batch size, uploads spread evenly over time at half the rate
   step 2 sustained, and p50/p99 of upload -> 202, timed from when each upload was due (a late
   start counts against the gateway).

Every row has devices and messages of its own (a different cohort seed), so the gateway's
idempotency never sees a message twice. The gateway's per-device rate limit is lifted
(``VITALS_GATEWAY_RATE_PER_DEVICE``): it protects the gateway from one device, and here a few
devices stand in for many. The cores each process used during a row (from /proc) say what
limits it: the gateway is one Python process, so it holds at most one core. The last column is
the machine's 1-minute load average as each row ends (the machine may be shared).

It starts the local Kafka and PostgreSQL if they are not running (``VITALS_KAFKA_BOOTSTRAP``,
``VITALS_DATABASE_URL``, ``VITALS_STATE_DIR``) and stops them after; it uses a fresh database and
fresh topics, deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp
import numpy as np
import psycopg
from kafka.admin import KafkaAdminClient
from psycopg import sql

from gateway.tokens import issue_token
from infra.kafka import LocalKafka
from infra.postgres import LocalPostgres
from infra.processes import child_env, free_port, read_pid
from kernel.settings import Settings
from kernel.vocabulary import METRICS
from simulators.gateway_publisher import GZIP_FROM_BYTES
from simulators.kafka_publisher import make_producer
from simulators.load import DeviceRecord, LoadCohort
from sinks.devices import enroll
from sinks.migrations import migrate

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
VITAL_SIGNS = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "vital-signs"}]}]
#: Per-device rate and burst for the benchmark's gateway: high enough never to refuse.
UNLIMITED = 1_000_000


def load_average() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 if it is gone)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass(frozen=True)
class Device:
    patient: str
    device: str
    token: str


@dataclass(frozen=True)
class Upload:
    body: bytes
    headers: dict[str, str]
    messages: int
    readings: int


@dataclass
class Cohort:
    """One row's devices (enrolled) and each device's messages in seq order."""

    devices: list[Device]
    messages: list[list[DeviceRecord]]

    @property
    def records(self) -> list[DeviceRecord]:
        """Every message, round by round (as the load generator yields them)."""
        return [m for rnd in zip(*self.messages) for m in rnd]

    @property
    def readings(self) -> int:
        return sum(r.readings for per_device in self.messages for r in per_device)


def make_cohort(devices: int, rounds: int, seed: int, owner_url: str) -> Cohort:
    """``devices`` load-generator devices with ``rounds`` messages each, enrolled in the device table."""
    cohort = LoadCohort(devices, seed=seed)
    index = {pid.encode(): i for i, pid in enumerate(cohort.patient_ids)}
    messages: list[list[DeviceRecord]] = [[] for _ in range(devices)]
    for record in cohort.records(minutes=rounds):
        messages[index[record.key]].append(record)
    enrolled = []
    for per_device in messages:
        first = json.loads(per_device[0].value)
        _, issued = enroll(owner_url, device_id=first["device_id"], patient_id=first["patient_id"],
                           issue=issue_token)
        enrolled.append(Device(first["patient_id"], first["device_id"], issued.token))
    return Cohort(enrolled, messages)


def _with_encoding(body: bytes, content_type: str, gzip_from: int | None) -> tuple[bytes, dict[str, str]]:
    headers = {"Content-Type": content_type}
    if gzip_from is not None and len(body) >= gzip_from:
        body, headers["Content-Encoding"] = gzip.compress(body, compresslevel=5), "gzip"
    return body, headers


def native_uploads(messages: Sequence[DeviceRecord], batch: int, gzip_from: int | None) -> list[Upload]:
    """A device's messages as native uploads of ``batch`` messages, encoded as GatewayProducer does."""
    uploads = []
    for start in range(0, len(messages), batch):
        chunk = messages[start:start + batch]
        raw = chunk[0].value if batch == 1 else b"[" + b",".join(m.value for m in chunk) + b"]"
        body, headers = _with_encoding(raw, "application/json", gzip_from)
        uploads.append(Upload(body, headers, len(chunk), sum(m.readings for m in chunk)))
    return uploads


def _iso(t_ms: int) -> str:
    moment = datetime.fromtimestamp(t_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fhir_uploads(messages: Sequence[DeviceRecord], batch: int, gzip_from: int | None) -> list[Upload]:
    """The same readings as FHIR R4 ``collection`` Bundles of vital-signs Observations, ``batch`` messages each."""
    uploads = []
    for start in range(0, len(messages), batch):
        chunk = messages[start:start + batch]
        entries = []
        for record in chunk:
            message = json.loads(record.value)
            for reading in message["readings"]:
                metric = METRICS[reading["metric"]]
                entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": {
                    "resourceType": "Observation", "status": "final", "category": VITAL_SIGNS,
                    "code": {"coding": [{"system": LOINC, "code": metric.loinc}]},
                    "subject": {"reference": f"Patient/{message['patient_id']}"},
                    "device": {"reference": f"Device/{message['device_id']}"},
                    "effectiveDateTime": _iso(reading["t"]),
                    "valueQuantity": {"value": reading["value"], "unit": metric.unit, "system": UCUM,
                                      "code": metric.ucum}}})
        raw = json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries},
                         separators=(",", ":")).encode()
        body, headers = _with_encoding(raw, "application/fhir+json", gzip_from)
        uploads.append(Upload(body, headers, len(chunk), len(entries)))
    return uploads


@dataclass
class Run:
    """What one row measured."""

    name: str
    readings: int = 0
    messages: int = 0
    uploads: int = 0
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    refused: Counter[int] = field(default_factory=Counter)
    late: int = 0
    cores: dict[str, float] = field(default_factory=dict)
    load: str = ""
    target: float | None = None

    @property
    def rate(self) -> float:
        return self.readings / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q)) * 1000 if self.latencies_s else float("nan")


class Cpu:
    """CPU the gateway, the broker and this process (client and direct producer) spend over a row."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids

    def __enter__(self) -> Cpu:
        self.wall = time.perf_counter()
        self.start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.own = time.process_time()
        return self

    def __exit__(self, *exc_info: object) -> None:
        wall = time.perf_counter() - self.wall
        self.cores = {name: (cpu_seconds(pid) - self.start[name]) / wall for name, pid in self.pids.items()}
        self.cores["bench"] = (time.process_time() - self.own) / wall


async def _device_loop(session: aiohttp.ClientSession, url: str, device: Device, uploads: list[Upload],
                       run: Run, *, first_due: float | None, interval_s: float | None) -> None:
    auth = {"Authorization": f"Bearer {device.token}"}
    for k, upload in enumerate(uploads):
        started = time.perf_counter()
        if first_due is not None and interval_s is not None:
            due = first_due + k * interval_s
            if due > started:
                await asyncio.sleep(due - started)
            elif started - due > 0.001:
                run.late += 1
            started = min(due, time.perf_counter())  # latency counts from when the upload was due
        async with session.post(url, data=upload.body, headers={**upload.headers, **auth}) as response:
            await response.read()
            status = response.status
        run.latencies_s.append(time.perf_counter() - started)
        if status == 202:
            run.readings += upload.readings
            run.messages += upload.messages
            run.uploads += 1
        else:
            run.refused[status] += 1


async def upload_all(url: str, devices: list[Device], uploads: list[list[Upload]], run: Run, *,
                     interval_s: float | None = None) -> None:
    """Every device posts its uploads, one at a time: back to back, or one every ``interval_s`` (staggered)."""
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter() + 0.05
        tasks = []
        for i, (device, mine) in enumerate(zip(devices, uploads)):
            first_due = None if interval_s is None else start + interval_s * i / len(devices)
            tasks.append(_device_loop(session, url, device, mine, run, first_due=first_due, interval_s=interval_s))
        began = time.perf_counter()
        await asyncio.gather(*tasks)
        run.elapsed_s = time.perf_counter() - (began if interval_s is None else start)


def gateway_run(name: str, base_url: str, cohort: Cohort, uploads: list[list[Upload]], cpu: dict[str, int | None],
                *, interval_s: float | None = None, target: float | None = None) -> Run:
    run = Run(name, target=target)
    with Cpu(cpu) as measured:
        asyncio.run(upload_all(base_url + "/v1/uploads", cohort.devices, uploads, run, interval_s=interval_s))
    run.cores, run.load = measured.cores, load_average()
    if run.refused:
        print(f"  warning: {name}: refused {dict(run.refused)}", file=sys.stderr)
    return run


def direct_run(name: str, settings: Settings, topic: str, records: list[DeviceRecord],
               cpu: dict[str, int | None]) -> Run:
    """kafka-python sending ``records`` to ``topic``, timed from the first send to the last acknowledgement."""
    producer = make_producer(settings)
    try:
        producer.send(topic, key=b"warm-up", value=records[0].value)
        producer.flush()  # connected, metadata fetched
        errors: list[BaseException] = []
        run = Run(name)
        with Cpu(cpu) as measured:
            started = time.perf_counter()
            for record in records:
                producer.send(topic, key=record.key, value=record.value).add_errback(errors.append)
            producer.flush()
            run.elapsed_s = time.perf_counter() - started
        if errors:
            raise RuntimeError(f"the direct producer lost {len(errors)} records: {errors[0]!r}")
    finally:
        producer.close(timeout=10)
    run.readings, run.messages = sum(r.readings for r in records), len(records)
    run.cores, run.load = measured.cores, load_average()
    return run


def start_gateway(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "gateway"], cwd=ROOT, env=child_env(settings),
                                stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{settings.gateway_port}/healthz", timeout=2):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the gateway did not answer in 90 s:\n{log.read_text()[-3000:]}")


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _package(frame: str) -> str:
    """The package a py-spy frame ``function (path:line)`` belongs to, for the profile summary."""
    path = frame.rsplit("(", 1)[-1]
    for name in ("gateway", "kernel", "sinks", "aiokafka", "aiohttp", "multidict", "yarl", "json", "asyncio",
                 "gzip", "zlib", "hashlib", "lz4", "prometheus_client", "selectors"):
        if f"/{name}/" in path or f"/{name}.py" in path or path.startswith(f"{name}/"):
            return name
    return "other"


def summarise_profile(path: Path, top: int = 12) -> list[str]:
    """Lines about py-spy's raw (collapsed) stacks: samples by package of the innermost frame, the hottest frames."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    if not total:
        return ["  no samples"]
    by_package: Counter[str] = Counter()
    for frame, samples in own.items():
        by_package[_package(frame)] += samples
    lines = [f"  {total:,} samples; innermost frame by package: "
             + ", ".join(f"{name} {n / total:.0%}" for name, n in by_package.most_common())]
    lines += [f"  self {n / total:>4.0%}  {frame}" for frame, n in own.most_common(top)]
    gateway_frames = [(f, c) for f, c in inclusive.most_common() if "gateway/" in f or "kernel/" in f]
    lines += [f"  incl {n / total:>4.0%}  {frame}" for frame, n in gateway_frames[:top]]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20, help="concurrent devices, each with its own token")
    parser.add_argument("--rounds", type=int, default=1500, help="messages per device in each batched row")
    parser.add_argument("--batches", default="10,100", help="messages per native upload, comma-separated")
    parser.add_argument("--single-rounds", type=int, default=100, help="messages per device, one per upload")
    parser.add_argument("--fhir-batch", type=int, default=10, help="messages per FHIR Bundle upload (0: no FHIR row)")
    parser.add_argument("--fhir-rounds", type=int, default=100, help="messages per device in the FHIR row")
    parser.add_argument("--paced-seconds", type=float, default=10.0, help="length of each paced run")
    parser.add_argument("--no-gzip", action="store_true", help="send every body uncompressed")
    parser.add_argument("--profile", type=Path,
                        help="after the measured rows, repeat the largest batch under py-spy; raw stacks to this file")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    gzip_from = None if args.no_gzip else GZIP_FROM_BYTES

    base = Settings()
    postgres, kafka = LocalPostgres(base), LocalKafka(base)
    started = [svc for svc in (postgres, kafka) if not svc.healthy()]
    postgres.start()
    kafka.start()
    tag = uuid.uuid4().hex[:8]
    admin_url = postgres.superuser_url.rsplit("/", 1)[0]
    dbname = f"bench_gw_{tag}"
    topics = [f"bench-gw-{tag}.readings", f"bench-gw-{tag}.direct"]
    gateway: subprocess.Popen[bytes] | None = None
    try:
        with psycopg.connect(f"{admin_url}/postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        owner_url = f"{admin_url}/{dbname}"
        migrate(owner_url)
        settings = base.model_copy(update={
            "readings_topic": topics[0], "deadletter_topic": f"bench-gw-{tag}.deadletter",
            "scores_topic": f"bench-gw-{tag}.scores", "features_topic": f"bench-gw-{tag}.features",
            "outcomes_topic": f"bench-gw-{tag}.outcomes", "snapshots_topic": f"bench-gw-{tag}.snapshots",
            "patients_topic": f"bench-gw-{tag}.patients",
            "database_url": f"postgresql://vitalrisk_writer@127.0.0.1:{postgres.target.port}/{dbname}",
            "gateway_database_url": f"postgresql://vitalrisk_gateway@127.0.0.1:{postgres.target.port}/{dbname}",
            "gateway_port": free_port(), "gateway_rate_per_device": float(UNLIMITED), "gateway_burst": UNLIMITED})
        LocalKafka(settings).create_topics()
        LocalKafka(settings.model_copy(update={"readings_topic": topics[1]})).create_topics()
        topics += [settings.deadletter_topic, settings.scores_topic, settings.features_topic,
                   settings.outcomes_topic, settings.snapshots_topic, settings.patients_topic]

        seeds = iter(range(1000, 2000))
        print(f"generating and enrolling ({args.devices} devices per row) ...", file=sys.stderr)
        warm = make_cohort(args.devices, 5, next(seeds), owner_url)
        main_batch = max(batches)
        batched = {n: make_cohort(args.devices, args.rounds, next(seeds), owner_url) for n in batches}
        single = make_cohort(args.devices, args.single_rounds, next(seeds), owner_url)
        fhir = make_cohort(args.devices, args.fhir_rounds, next(seeds), owner_url) if args.fhir_batch else None
        uploads = {n: [native_uploads(m, n, gzip_from) for m in c.messages] for n, c in batched.items()}
        single_uploads = [native_uploads(m, 1, gzip_from) for m in single.messages]
        fhir_up = [] if fhir is None else [fhir_uploads(m, args.fhir_batch, gzip_from) for m in fhir.messages]
        per_message = batched[main_batch].readings / (args.devices * args.rounds)

        log = settings.state_dir / f"bench-gateway-{tag}.log"
        gateway = start_gateway(settings, log)
        base_url = f"http://127.0.0.1:{settings.gateway_port}"
        cpu = {"gateway": gateway.pid, "broker": read_pid(kafka.paths.pid)}
        gateway_run("warm-up", base_url, warm, [native_uploads(m, 1, gzip_from) for m in warm.messages], cpu)
        gateway_run("warm-up, FHIR", base_url, warm, [fhir_uploads(m, 5, gzip_from) for m in warm.messages], cpu)

        loads = [load_average()]
        rows: list[Run] = []
        direct_records = batched[main_batch].records  # the very messages of the largest batch's row
        before = direct_run("direct kafka-python, before", settings, topics[1], direct_records, cpu)
        rows.append(before)
        for n in sorted(batches, reverse=True):
            label = f"gateway, native, {n} messages/upload"
            rows.append(gateway_run(label, base_url, batched[n], uploads[n], cpu))
        rows.append(gateway_run("gateway, native, 1 message/upload", base_url, single, single_uploads, cpu))
        if fhir is not None:
            rows.append(gateway_run(f"gateway, FHIR Bundle, {args.fhir_batch} messages/upload", base_url, fhir,
                                    fhir_up, cpu))
        after = direct_run("direct kafka-python, after", settings, topics[1], direct_records, cpu)
        rows.append(after)
        limit = (before.rate + after.rate) / 2

        paced: list[Run] = []
        sustained = {r.name: r.rate for r in rows}
        for n in sorted(batches, reverse=True):
            target = 0.5 * sustained[f"gateway, native, {n} messages/upload"]
            # Each device uploads every interval_s, the devices staggered evenly across it.
            count = max(2, int(args.paced_seconds * target / (args.devices * n * per_message)) + 1)
            cohort = make_cohort(args.devices, count * n, next(seeds), owner_url)
            ups = [native_uploads(m, n, gzip_from) for m in cohort.messages]
            interval_s = cohort.readings / count / target
            paced.append(gateway_run(f"gateway at 50 %, native, {n} messages/upload", base_url, cohort, ups, cpu,
                                     interval_s=interval_s, target=target))
        loads.append(load_average())

        profile_run = None
        if args.profile is not None:
            cohort = make_cohort(args.devices, args.rounds, next(seeds), owner_url)
            ups = [native_uploads(m, main_batch, gzip_from) for m in cohort.messages]
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw",
                                    "--rate", "200", "--pid", str(gateway.pid), "-o", str(args.profile)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
            profile_run = gateway_run(f"under py-spy, native, {main_batch} messages/upload", base_url, cohort, ups,
                                      cpu)
            spy.send_signal(signal.SIGINT)
            spy.wait(60)

        stop_process(gateway)
        gateway = None

        print(f"gateway benchmark: {args.devices} devices, {per_message:.1f} readings and "
              f"{np.mean([len(r.value) for r in direct_records]):,.0f} bytes per message, "
              f"{'no gzip' if gzip_from is None else f'gzip from {gzip_from // 1024} KiB'}; "
              f"{os.cpu_count()} cores; load average before and after: {', '.join(loads)}")
        print(f"  {'path':<44}{'readings/s':>11}{'vs limit':>9}{'p50 ms':>8}{'p99 ms':>8}"
              f"{'messages':>9}{'uploads':>8}   cores: gateway/broker/bench   load after")
        for run in [*rows, *paced, *([profile_run] if profile_run else [])]:
            latency = (f"{run.percentile_ms(50):>8.1f}{run.percentile_ms(99):>8.1f}" if run.latencies_s
                       else f"{'-':>8}{'-':>8}")
            cores = "/".join(f"{run.cores.get(k, 0.0):.2f}" for k in ("gateway", "broker", "bench"))
            note = "" if run.target is None else f"  (target {run.target:,.0f}/s; {run.late} uploads late)"
            print(f"  {run.name:<44}{run.rate:>11,.0f}{run.rate / limit:>9.2f}{latency}{run.messages:>9,}"
                  f"{run.uploads or '-':>8}   {cores:<14}   {run.load.split('/')[0]:>4}{note}"
                  + (f"  refused {dict(run.refused)}" if run.refused else ""))
        print(f"  limit: mean of the direct producer before and after, {limit:,.0f} readings/s")
        if args.profile is not None:
            print(f"  py-spy of the gateway process ({args.profile}):")
            print("\n".join(summarise_profile(args.profile)))
        best = max(r.rate for r in rows if r.name.startswith("gateway, native") and "1 message" not in r.name)
        worst_p99 = max(r.percentile_ms(99) for r in paced) if paced else float("nan")
        print(f"  targets: batched >= 0.50 of the limit: {best / limit:.2f} "
              f"({'met' if best >= 0.5 * limit else 'not met'}); p99 <= 100 ms at 50 %: {worst_p99:.1f} ms "
              f"({'met' if worst_p99 <= 100 else 'not met'})")
        return 0
    finally:
        if gateway is not None:
            stop_process(gateway)
        admin = KafkaAdminClient(bootstrap_servers=base.kafka_bootstrap, client_id="bench-gateway")
        try:
            admin.delete_topics([t for t in topics if t in set(admin.list_topics())])
        finally:
            admin.close()
        with psycopg.connect(f"{admin_url}/postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        for svc in reversed(started):
            svc.stop()


if __name__ == "__main__":
    sys.exit(main())
