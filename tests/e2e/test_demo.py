"""``vitalrisk demo`` as a newcomer runs it: from nothing, and with a worker that dies."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from infra.postgres import LocalPostgres
from infra.processes import free_port
from kernel.settings import Settings
from tests.conftest import ROOT, TEST_KAFKA, TEST_PG_PORT, Services

pytestmark = pytest.mark.integration


def _demo(env: dict[str, str], *args: str, timeout_s: float = 400) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VITALS_")}
    return subprocess.run([sys.executable, "-m", "stream.cli", "demo", *args], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=timeout_s)


def test_the_demo_runs_from_an_empty_state_folder(tmp_path: Path) -> None:
    """No .local at all: the demo starts its own Kafka and PostgreSQL, a worker with a fresh Faust
    folder, and prints the summary; nothing of the run is a traceback."""
    state = tmp_path / "fresh" / ".local"
    kafka_port = free_port()
    while kafka_port + 1 == (pg_port := free_port()):
        pass
    done = _demo({"VITALS_STATE_DIR": str(state), "VITALS_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",
                  "VITALS_DATABASE_URL": f"postgresql://vitalrisk_writer@127.0.0.1:{pg_port}/vitalrisk"},
                 "--patients", "8", "--minutes", "6")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "vitalrisk demo summary" in done.stdout
    assert "Traceback" not in output, output[-4000:]
    assert any((state / "faust").iterdir()), "the worker made its Faust folder with its parents"
    assert "stopped the services the demo started" in done.stderr
    cluster = LocalPostgres(Settings(state_dir=state, database_url=f"postgresql://x@127.0.0.1:{pg_port}/vitalrisk"))
    cluster.discard_storage()


def test_a_worker_that_dies_is_one_line_and_its_log(services: Services) -> None:
    """The worker cannot bind its metrics port: the demo names the log and shows its last lines."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _demo({"VITALS_STATE_DIR": str(services.base.state_dir), "VITALS_KAFKA_BOOTSTRAP": TEST_KAFKA,
                      "VITALS_DATABASE_URL": f"postgresql://vitalrisk_writer@127.0.0.1:{TEST_PG_PORT}/vitalrisk",
                      "VITALS_METRICS_PORT": str(port)}, "--patients", "2", "--minutes", "2", timeout_s=200)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("vitalrisk: ")]
    assert len(errors) == 1 and "the worker exited with status" in errors[0] and ".log" in errors[0], done.stderr
    after = done.stderr.split(errors[0], 1)[1].splitlines()[1:]
    excerpt = [line for line in after if line.startswith("    ")]
    assert excerpt and "cannot listen on" in excerpt[-1] and "VITALS_METRICS_PORT" in excerpt[-1], after
    admin = services.superuser_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:  # the demo's database, left on the tests' cluster
        conn.execute("DROP DATABASE IF EXISTS vitalrisk_demo WITH (FORCE)")
