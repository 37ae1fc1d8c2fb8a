"""Every ``vitalrisk`` failure a user can fix is one line on stderr, never a traceback.

Exit status 2 for a bad argument or setting, 1 for a service that is down, a port that is taken
or a run that failed. Each case runs the real command as a child process with Kafka and
PostgreSQL pointed at ports nothing listens on, so these need no services (that is the point);
the cases that need a real broker and database are ``integration``-marked at the end.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.processes import child_env, free_port
from kernel.settings import Settings
from tests.conftest import ROOT, Services

#: Long enough for the slowest start-up (the trainer imports River); a hang fails the case.
RUN_TIMEOUT_S = 60
KEY = "k" * 40  # a snapshot key long enough to be accepted


def run_cli(argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stream.cli", *argv], check=False, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S)


def assert_one_line(done: subprocess.CompletedProcess[str], status: int, *fragments: str) -> None:
    """Exit ``status``; stderr one non-empty line starting ``vitalrisk: `` holding ``fragments``."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("vitalrisk: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert done.returncode == status, done.stderr


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process (here: this one) listens on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


@pytest.fixture
def not_a_broker() -> Iterator[int]:
    """A port that accepts connections and closes them at once: a broker that dies at start."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join()
    listener.close()


@pytest.fixture
def down(tmp_path: Path) -> dict[str, str]:
    """The environment of a machine with neither Kafka nor PostgreSQL running."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITALS_")}
    env.update(VITALS_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
               VITALS_DATABASE_URL=f"postgresql://vitalrisk_writer@127.0.0.1:{free_port()}/vitalrisk",
               VITALS_STATE_DIR=str(tmp_path / "state"), VITALS_DATA_DIR=str(tmp_path / "state" / "faust"),
               VITALS_ALERTER_PORT="0")
    return env


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A folder with a regular file ``a-file``, a CSV with a bad header and one good recording."""
    (tmp_path / "a-file").write_text("not a folder\n")
    (tmp_path / "bad.csv").write_text("time,metric,value\n1767571260000,heart_rate,71\n")
    (tmp_path / "good.csv").write_text("timestamp,metric,value\n1767571260000,heart_rate,71\n")
    return tmp_path


# -- services not started --------------------------------------------------------------------

SIMULATE = ["simulate", "--patients", "1", "--minutes", "1"]
NEEDS_KAFKA = [
    pytest.param(["worker"], {}, id="worker"),
    pytest.param(["worker"], {"VITALS_SNAPSHOT_KEY": KEY}, id="worker-with-models"),
    pytest.param(["trainer"], {"VITALS_SNAPSHOT_KEY": KEY}, id="trainer"),
    pytest.param(["alerter"], {"VITALS_WEBHOOK_SECRET": "s"}, id="alerter"),
    pytest.param(SIMULATE, {}, id="simulate"),
    pytest.param(["simulate", "--patients", "1", "--rate", "10", "--duration", "1"], {}, id="simulate-rate"),
    pytest.param(["replay", "{files}/good.csv", "--patient", "pt-1"], {}, id="replay"),
    pytest.param(["deadletters", "list"], {}, id="deadletters-list"),
    pytest.param(["deadletters", "summary", "--by", "reason"], {}, id="deadletters-summary"),
    pytest.param(["deadletters", "replay", "--reason", "late"], {}, id="deadletters-replay"),
]


@pytest.mark.parametrize(("argv", "extra"), NEEDS_KAFKA)
def test_kafka_not_running(argv: list[str], extra: dict[str, str], down: dict[str, str], files: Path) -> None:
    done = run_cli([a.format(files=files) for a in argv], {**down, **extra})
    assert_one_line(done, 1, f"Kafka at {down['VITALS_KAFKA_BOOTSTRAP']} is not reachable",
                    "vitalrisk infra start kafka")


@pytest.mark.parametrize(("argv", "extra"), [
    pytest.param(["worker"], {}, id="worker"),
    pytest.param(["trainer"], {"VITALS_SNAPSHOT_KEY": KEY}, id="trainer"),
    pytest.param(["alerter"], {"VITALS_WEBHOOK_SECRET": "s"}, id="alerter"),
])
def test_a_broker_that_dies_at_start(argv: list[str], extra: dict[str, str], down: dict[str, str],
                                     not_a_broker: int) -> None:
    done = run_cli(argv, {**down, **extra, "VITALS_KAFKA_BOOTSTRAP": f"127.0.0.1:{not_a_broker}"})
    assert_one_line(done, 1, "does not answer as a broker")


@pytest.mark.parametrize("argv", [
    pytest.param(["ack", "al-1", "--by", "rn-1"], id="ack"),
    pytest.param(["silence", "--patient", "pt-1", "--minutes", "5", "--by", "rn-1", "--reason", "rounds"],
                 id="silence"),
    pytest.param(["unsilence", "si-1", "--by", "rn-1"], id="unsilence"),
    pytest.param(["migrate"], id="migrate"),
])
def test_postgres_not_running(argv: list[str], down: dict[str, str]) -> None:
    port = down["VITALS_DATABASE_URL"].rsplit(":", 1)[1].split("/")[0]
    assert_one_line(run_cli(argv, down), 1, f"PostgreSQL at 127.0.0.1:{port}", "is not reachable",
                    "vitalrisk infra start postgres")


# -- ports taken -----------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "variable", "extra"), [
    pytest.param(["worker"], "VITALS_METRICS_PORT", {}, id="worker-metrics"),
    pytest.param(["trainer"], "VITALS_METRICS_PORT", {"VITALS_SNAPSHOT_KEY": KEY}, id="trainer-metrics"),
    pytest.param(["alerter"], "VITALS_METRICS_PORT", {"VITALS_WEBHOOK_SECRET": "s"}, id="alerter-metrics"),
    pytest.param(["alerter"], "VITALS_ALERTER_PORT", {"VITALS_WEBHOOK_SECRET": "s"}, id="alerter-api"),
])
def test_port_taken(argv: list[str], variable: str, extra: dict[str, str], down: dict[str, str],
                    taken_port: int) -> None:
    done = run_cli(argv, {**down, **extra, variable: str(taken_port)})
    assert_one_line(done, 1, f"127.0.0.1:{taken_port}", "another process uses the port", variable)


def test_pager_port_taken(down: dict[str, str], taken_port: int) -> None:
    done = run_cli(["pager", "--port", str(taken_port)], {**down, "VITALS_WEBHOOK_SECRET": "s"})
    assert_one_line(done, 1, f"the pager cannot listen on 127.0.0.1:{taken_port}", "--port")


@pytest.mark.parametrize(("service", "variable"), [("postgres", "VITALS_DATABASE_URL"),
                                                   ("kafka", "VITALS_KAFKA_BOOTSTRAP")])
def test_infra_start_on_a_taken_port(service: str, variable: str, down: dict[str, str], taken_port: int) -> None:
    env = {**down, "VITALS_DATABASE_URL": f"postgresql://vitalrisk_writer@127.0.0.1:{taken_port}/vitalrisk",
           "VITALS_KAFKA_BOOTSTRAP": f"127.0.0.1:{taken_port}"}
    assert_one_line(run_cli(["infra", "start", service], env), 1, f"127.0.0.1:{taken_port}", variable)


# -- bad settings ----------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "extra", "fragments"), [
    pytest.param(["worker"], {"VITALS_PARTITIONS": "abc"}, ["VITALS_PARTITIONS='abc'", "valid integer"],
                 id="partitions"),
    pytest.param(["alerter"], {"VITALS_ALERT_RISK_ENTER": "2"}, ["VITALS_ALERT_RISK_ENTER='2'", "less than or equal"],
                 id="range"),
    pytest.param(["trainer"], {"VITALS_MODEL": "tree", "VITALS_PARTITIONS": "0"},
                 ["VITALS_PARTITIONS='0'", "(and 1 more: VITALS_MODEL)"], id="two-at-once"),
    pytest.param(["ack", "al-1", "--by", "rn-1"], {"VITALS_DATABASE_URL": "postgresql://w:hunter2@[::1/v"},
                 ["VITALS_DATABASE_URL:", "libpq URL"], id="database-url"),
    pytest.param(["migrate"], {"VITALS_DATABASE_URL": "postgresql://w@db.example:5432/v"},
                 ["127.0.0.1 only", "--url or VITALS_ADMIN_DATABASE_URL"], id="migrate-remote"),
    pytest.param(["infra", "status"], {"VITALS_DATABASE_URL": "postgresql://w@db.example:5432/v"},
                 ["127.0.0.1 only", "VITALS_DATABASE_URL"], id="infra-remote"),
    pytest.param(SIMULATE, {"VITALS_KAFKA_BOOTSTRAP": "localhost"}, ["VITALS_KAFKA_BOOTSTRAP='localhost'", "host:port"],
                 id="bootstrap"),
    pytest.param(["alerter"], {"VITALS_WEBHOOK_SECRET": "s", "VITALS_WEBHOOK_RECEIVERS": "pager"},
                 ["name=http(s)://", "'pager'"], id="receivers"),
    pytest.param(["alerter"], {"VITALS_WEBHOOK_SECRET": "s", "VITALS_WEBHOOK_ROUTES": "critical=nobody"},
                 ["unknown receivers"], id="routes"),
    pytest.param(["alerter"], {}, ["VITALS_WEBHOOK_SECRET must be set"], id="alerter-secret"),
    pytest.param(["alerter"], {"VITALS_WEBHOOK_SECRET": "s", "VITALS_ALERTER_HOST": "0.0.0.0",
                               "VITALS_ALERTER_PORT": "9094"},
                 ["would listen on 0.0.0.0 without a token", "VITALS_ALERTER_API_TOKEN"], id="alerter-exposed"),
    pytest.param(["alerter"], {"VITALS_WEBHOOK_SECRET": "s", "VITALS_ALERTER_API_TOKEN": "hunter2"},
                 ["VITALS_ALERTER_API_TOKEN", "at least 32 characters"], id="alerter-short-token"),
    pytest.param(["alerter"], {"VITALS_WEBHOOK_SECRET": "s", "VITALS_WEBHOOK_REQUIRE_HTTPS": "true"},
                 ["receiver 'pager' must be an https:// URL"], id="alerter-https"),
    pytest.param(["alerter"], {"VITALS_WEBHOOK_SECRET": "s", "VITALS_WEBHOOK_CA_FILE": "{files}/bad.csv"},
                 ["VITALS_WEBHOOK_CA_FILE", "no CA certificate could be read"], id="alerter-ca-file"),
    pytest.param(["pager"], {}, ["VITALS_WEBHOOK_SECRET"], id="pager-secret"),
    pytest.param(["trainer"], {}, ["VITALS_SNAPSHOT_KEY"], id="trainer-key"),
    pytest.param(["worker"], {"VITALS_SNAPSHOT_KEY": "short"}, ["snapshot key must be at least 32"], id="short-key"),
    pytest.param(["worker"], {"VITALS_DATA_DIR": "{files}/a-file/faust"}, ["VITALS_DATA_DIR", "Not a directory"],
                 id="data-dir"),
])
def test_bad_setting(argv: list[str], extra: dict[str, str], fragments: list[str], down: dict[str, str],
                     files: Path) -> None:
    done = run_cli(argv, {**down, **{k: v.format(files=files) for k, v in extra.items()}})
    assert_one_line(done, 2, *fragments)
    assert "hunter2" not in done.stderr  # a URL's password is never echoed


# -- bad arguments ---------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "fragments"), [
    pytest.param([], ["the following arguments are required"], id="no-command"),
    pytest.param(["simulate", "--patients", "x"], ["simulate: argument --patients", "'x'"], id="type"),
    pytest.param(["pager", "--port", "70000"], ["--port", "1-65535", "70000"], id="port-range"),
    pytest.param(["migrate", "--url", "nonsense ="], ["--url", "libpq URL"], id="migrate-url"),
    pytest.param(["evaluate", "--model", "tree"], ["invalid choice: 'tree'"], id="evaluate-model"),
    pytest.param(["evaluate", "--patients", "2", "--days", "0.01", "--out", "{files}/a-file"],
                 ["--out", "File exists"], id="evaluate-out-file"),
    pytest.param(["export", "--days", "0.01", "--out", "{files}/a-file/x"], ["cannot write", "Not a directory"],
                 id="export-out"),
    pytest.param(["replay", "{files}/missing.csv", "--patient", "pt-1"], ["No such file"], id="replay-missing"),
    pytest.param(["replay", "{files}/bad.csv", "--patient", "pt-1"], ["line 1", "the header must be"],
                 id="replay-bad-csv"),
    pytest.param(["pager", "--record", "{files}/a-file/r.jsonl"], ["cannot append", "Not a directory"],
                 id="pager-record"),
    pytest.param(["pager", "--record", "{files}/bad.csv"], ["line 1 is not a JSON record"], id="pager-record-bad"),
    pytest.param(["pager", "--host", "no-such-host.invalid"], ["cannot listen on no-such-host.invalid", "--host"],
                 id="pager-host"),
    pytest.param(["silence", "--minutes", "5", "--by", "rn-1", "--reason", "rounds"],
                 ["one of the arguments --patient --all-patients is required"], id="silence-scope"),
    pytest.param(["silence", "--all-patients", "--minutes", "90", "--by", "ops-1", "--reason", "maintenance"],
                 ["every patient lasts at most 60 minutes"], id="silence-wildcard-too-long"),
    pytest.param(["pager", "--secret-env", "VITALS_TEST_UNSET_SECRET"], ["VITALS_TEST_UNSET_SECRET", "is unset"],
                 id="pager-secret-env"),
])
def test_bad_argument(argv: list[str], fragments: list[str], down: dict[str, str], files: Path) -> None:
    if argv[:1] == ["pager"] and "--port" not in argv:
        argv = [*argv, "--port", str(free_port())]
    done = run_cli([a.format(files=files) for a in argv], {**down, "VITALS_WEBHOOK_SECRET": "s"})
    assert_one_line(done, 2, *fragments)


# -- with the real services ------------------------------------------------------------------

@pytest.mark.integration
def test_worker_with_kafka_up_and_postgres_down(services: Services, tmp_path: Path) -> None:
    settings = services.settings(database_url=f"postgresql://vitalrisk_writer@127.0.0.1:{free_port()}/vitalrisk",
                                 data_dir=tmp_path / "faust")
    assert_one_line(run_cli(["worker"], child_env(settings)), 1, "PostgreSQL", "is not reachable")


@pytest.mark.integration
def test_ack_of_an_unknown_alert(isolated: Settings) -> None:
    done = run_cli(["ack", "al-no-such-alert", "--by", "rn-1"], child_env(isolated))
    assert_one_line(done, 2, "al-no-such-alert")


@pytest.mark.integration
def test_worker_on_a_database_without_the_schema_role(services: Services, tmp_path: Path) -> None:
    url = services.base.database_url.replace("vitalrisk_writer@", "vitalrisk_nobody@")
    settings = services.settings(database_url=url, data_dir=tmp_path / "faust")
    assert_one_line(run_cli(["worker"], child_env(settings)), 1, "refused the connection", "vitalrisk_nobody")
