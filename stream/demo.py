"""``vitalrisk demo``: the whole path on this machine, then a summary, then everything stopped.

It starts the local Kafka and PostgreSQL (unless they already run), gives itself a fresh
database and fresh topics, runs a real worker process, streams a simulated cohort through it,
waits until every window is written, prints what arrived and stops what it started.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from infra.kafka import LocalKafka
from infra.postgres import SUPERUSER, LocalPostgres
from infra.processes import child_env, free_port, port_open
from simulators.cohort import CohortConfig, simulate
from simulators.kafka_publisher import make_producer, publish
from simulators.run import MS_PER_MINUTE, progress_line
from sinks.metrics import scrape
from sinks.migrations import migrate
from kernel.errors import ConfigurationError, ProcessDied
from kernel.settings import READER_ROLE, WORKER_ROLE, Settings, role_url

DEMO_DATABASE = "vitalrisk_demo"
WORKER_START_TIMEOUT_S = 120.0
DRAIN_TIMEOUT_S = 300.0
#: How much of a dead worker's log the demo shows.
LOG_EXCERPT_LINES = 8


def run_demo(settings: Settings, *, patients: int, minutes: int, seed: int) -> int:
    """Run the demo; return the process exit status."""
    try:
        postgres = LocalPostgres(settings)
        kafka = LocalKafka(settings)
    except ValueError as exc:  # an address that is not this machine's: the demo runs its own services
        raise ConfigurationError(f"the demo starts its own Kafka and PostgreSQL on 127.0.0.1: {exc}") from None
    started = [svc for svc in (postgres, kafka) if not svc.healthy()]
    worker: subprocess.Popen[bytes] | None = None
    run_id = uuid.uuid4().hex[:8]
    try:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        _say(f"starting PostgreSQL and Kafka under {settings.state_dir}/ ...")
        postgres.start()
        kafka.start()
        demo = _fresh_demo_settings(settings, postgres, run_id)
        LocalKafka(demo).create_topics()
        metrics_url = f"http://127.0.0.1:{demo.metrics_port}/metrics"
        log_path = settings.state_dir / f"demo-worker-{run_id}.log"
        _say(f"starting a worker (log: {log_path}) ...")
        with open(log_path, "wb") as log:
            worker = subprocess.Popen([sys.executable, "-m", "stream.cli", "worker"], env=child_env(demo),
                                      stdout=log, stderr=subprocess.STDOUT)
        _wait_for_worker(worker, demo, log_path)

        config = CohortConfig(patients=patients, seed=seed, duration_ms=minutes * MS_PER_MINUTE)
        _say(f"streaming {patients} patients x {minutes} simulated minutes (seed {seed}) ...")
        producer = make_producer(demo)
        try:
            report = publish(simulate(config), settings=demo, producer=producer,
                             progress=lambda r: _progress(progress_line(r)))
        finally:
            producer.close()
        _progress(progress_line(report))
        print(file=sys.stderr)
        _say("waiting for the worker to close and write every window ...")
        _drain(worker, metrics_url, report.messages - report.outcomes, log_path)
        _summary(demo, readings=report.readings, seconds=report.seconds)
        return 0
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        for svc in reversed(started):
            svc.stop()
        if started:
            _say("stopped the services the demo started")


def _fresh_demo_settings(settings: Settings, postgres: LocalPostgres, run_id: str) -> Settings:
    """A new database and topic names for this run, so a demo never sees an earlier one's data.

    The worker connects as its own role, ``vitalrisk_worker`` (with TLS when the cluster is secured).
    """
    with psycopg.connect(postgres.url(SUPERUSER, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DEMO_DATABASE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DEMO_DATABASE)))
    migrate(postgres.url(SUPERUSER, DEMO_DATABASE), timescale=settings.sink_timescale)
    prefix = f"demo-{run_id}"
    return settings.model_copy(update={
        "app_id": f"vitalrisk-{prefix}",
        "readings_topic": f"{prefix}.vitals.readings", "deadletter_topic": f"{prefix}.vitals.deadletter",
        "outcomes_topic": f"{prefix}.vitals.outcomes", "scores_topic": f"{prefix}.risk.scores",
        "database_url": postgres.url(WORKER_ROLE, DEMO_DATABASE),
        "data_dir": settings.state_dir / "faust" / prefix,
        "metrics_port": settings.metrics_port or free_port(),
        "idle_timeout_s": 3.0,
    })


def log_excerpt(log_path: Path, lines: int = LOG_EXCERPT_LINES) -> str:
    r"""The last ``lines`` lines of a log, traceback frames left out, each indented.

    A user reads what went wrong (the log lines and the exception's own line); the frames stay
    in the log for a developer.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".log", delete=False) as f:
    ...     _ = f.write("INFO starting\nTraceback (most recent call last):\n  File \"x.py\", line 1\n"
    ...                 "    boom()\nOSError: [Errno 98] Address already in use\n")
    >>> print(log_excerpt(Path(f.name)))
        INFO starting
        OSError: [Errno 98] Address already in use
    """
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return f"    (no log at {log_path})"
    kept = [line for line in text.splitlines()
            if line.strip() and not line.startswith((" ", "\t", "Traceback (most recent call last)"))]
    return "\n".join(f"    {line[:200]}" for line in kept[-lines:])


def _worker_died(worker: subprocess.Popen[bytes], log_path: Path) -> ProcessDied:
    return ProcessDied(f"the worker exited with status {worker.returncode}; last lines of {log_path}:",
                       log_excerpt(log_path))


def _wait_for_worker(worker: subprocess.Popen[bytes], settings: Settings, log_path: Path) -> None:
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise _worker_died(worker, log_path)
        if port_open("127.0.0.1", settings.metrics_port):
            return
        time.sleep(0.25)
    raise ProcessDied(f"the worker did not start within {WORKER_START_TIMEOUT_S:.0f} s; last lines of {log_path}:",
                      log_excerpt(log_path))


def _drain(worker: subprocess.Popen[bytes], metrics_url: str, device_messages: int, log_path: Path) -> None:
    """Wait until the worker has read every device message and written every window."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise _worker_died(worker, log_path)
        try:
            consumed = scrape(metrics_url, "vitals_messages_total")
            emitted = scrape(metrics_url, "vitals_windows_emitted_total")
            open_windows = scrape(metrics_url, "vitals_open_windows")
            rows = scrape(metrics_url, "vitals_sink_rows_total")
        except OSError:  # the worker is going down (its exit is reported above) or busy; look again
            time.sleep(0.5)
            continue
        _progress(f"worker: {consumed:,.0f}/{device_messages:,} messages, {emitted:,.0f} windows closed, "
                  f"{open_windows:,.0f} open, {rows:,.0f} rows written")
        if consumed >= device_messages and open_windows == 0 and emitted > 0:
            print(file=sys.stderr)
            return
        time.sleep(1.0)
    raise ProcessDied(f"the worker did not finish within {DRAIN_TIMEOUT_S:.0f} s; last lines of {log_path}:",
                      log_excerpt(log_path))


def _summary(settings: Settings, *, readings: int, seconds: float) -> None:
    reader_url = role_url(settings.database_url, READER_ROLE)  # read-only, as Grafana reads
    with psycopg.connect(reader_url) as conn:
        windows, patients = conn.execute(
            "SELECT count(DISTINCT (patient_id, window_start)), count(DISTINCT patient_id) FROM features").fetchone() or (0, 0)
        feature_rows = conn.execute("SELECT count(*) FROM features").fetchone()
        scores = conn.execute("SELECT count(*) FROM risk_scores").fetchone()
        bands = conn.execute("SELECT news2_band, count(*) FROM risk_scores GROUP BY 1 ORDER BY 2 DESC").fetchall()
        server, timescale = conn.execute(
            "SELECT current_setting('server_version'), "
            "(SELECT extversion FROM pg_extension WHERE extname = 'timescaledb')").fetchone() or ("?", None)
        top = conn.execute("""
            SELECT DISTINCT ON (patient_id) patient_id, window_start, news2_total, news2_band, inputs
            FROM risk_scores ORDER BY patient_id, window_start DESC""").fetchall()
    top.sort(key=lambda r: (-r[2], r[0]))
    print()
    print("vitalrisk demo summary")
    print("----------------------")
    print(f"  patients             {patients:>10,}")
    print(f"  readings published   {readings:>10,}   ({readings / max(seconds, 1e-9):,.0f} readings/s)")
    print(f"  windows (1 min)      {windows:>10,}   ({(feature_rows or (0,))[0]:,} feature rows)")
    print(f"  NEWS2 scores         {(scores or (0,))[0]:>10,}   "
          + ", ".join(f"{band}: {n:,}" for band, n in bands))
    print(f"  stored in            PostgreSQL {server.split()[0]}"
          + (f" + TimescaleDB {timescale} (hypertables, continuous aggregates)" if timescale else
             " (plain tables and views; TimescaleDB not installed)"))
    print()
    print("  highest-risk patients (latest window)")
    print(f"  {'patient':<16}{'window start (UTC)':<22}{'NEWS2':>6}  {'band':<11}"
          f"{'HR':>6}{'RR':>6}{'SpO2':>6}{'Temp':>6}{'SBP':>6}")
    for patient, start, total, band, inputs in top[:10]:
        vitals = "".join(_cell(inputs.get(metric), digits) for metric, digits in _SUMMARY_VITALS)
        print(f"  {patient:<16}{start:%Y-%m-%d %H:%M}{'':<6}{total:>6}  {band:<11}{vitals}")
    print("  (- : not measured within the carry-forward period; scored as normal)")
    print()


_SUMMARY_VITALS = (("heart_rate", 0), ("respiratory_rate", 0), ("oxygen_saturation", 0),
                   ("body_temperature", 1), ("systolic_blood_pressure", 0))


def _cell(value: float | None, digits: int) -> str:
    return f"{'-':>6}" if value is None else f"{value:>6.{digits}f}"


def _say(text: str) -> None:
    print(f"vitalrisk demo: {text}", file=sys.stderr, flush=True)


def _progress(text: str) -> None:
    print(f"\r  {text:<110}", end="", file=sys.stderr, flush=True)
