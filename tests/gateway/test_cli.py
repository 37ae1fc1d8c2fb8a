"""``vitalrisk gateway``, ``devices`` and ``replay --via-gateway`` fail in one line, never a traceback (no services)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from infra.processes import free_port
from tests.test_cli_failures import assert_one_line, run_cli


@pytest.fixture
def down(tmp_path: Path) -> dict[str, str]:
    """Neither Kafka nor PostgreSQL running; a recording to replay."""
    (tmp_path / "good.csv").write_text("timestamp,metric,value\n1767571260000,heart_rate,71\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITALS_")}
    env.update(VITALS_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
               VITALS_DATABASE_URL=f"postgresql://vitalrisk_writer@127.0.0.1:{free_port()}/vitalrisk",
               VITALS_GATEWAY_PORT=str(free_port()), VITALS_STATE_DIR=str(tmp_path / "state"))
    return env


def test_gateway_without_kafka(down: dict[str, str]) -> None:
    assert_one_line(run_cli(["gateway"], down), 1, f"Kafka at {down['VITALS_KAFKA_BOOTSTRAP']} is not reachable")


def test_gateway_on_a_taken_port(down: dict[str, str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:  # another process's port (here: this one's)
        port = listener.getsockname()[1]
        done = run_cli(["gateway"], {**down, "VITALS_GATEWAY_PORT": str(port)})
    assert_one_line(done, 1, f"the gateway cannot listen on 127.0.0.1:{port}", "VITALS_GATEWAY_PORT")


@pytest.mark.parametrize("argv", [["devices", "list"], ["devices", "enroll", "--patient", "pt-1"],
                                  ["devices", "revoke", "dev-1"]], ids=["list", "enroll", "revoke"])
def test_devices_without_postgres(argv: list[str], down: dict[str, str]) -> None:
    assert_one_line(run_cli(argv, down), 1, "PostgreSQL at 127.0.0.1:", "is not reachable")


@pytest.mark.parametrize(("argv", "fragments"), [
    pytest.param(["devices", "enroll", "--patient", "Jane Doe"], ["--patient", "pseudonymous id", "'Jane Doe'"],
                 id="patient-name"),
    pytest.param(["devices", "enroll"], ["--patient"], id="no-patient"),
    pytest.param(["devices", "revoke", "dev 1"], ["pseudonymous id"], id="device-id"),
    pytest.param(["replay", "{files}/good.csv", "--patient", "pt-1", "--token", "t"], ["--via-gateway"],
                 id="token-without-gateway"),
    pytest.param(["replay", "{files}/good.csv", "--patient", "pt-1", "--via-gateway", "http://127.0.0.1:1"],
                 ["needs the device's token"], id="gateway-without-token"),
    pytest.param(["replay", "{files}/good.csv", "--patient", "pt-1", "--via-gateway", "http://127.0.0.1:1",
                  "--token-env", "VITALS_TEST_UNSET_TOKEN"], ["VITALS_TEST_UNSET_TOKEN is not set"], id="token-env"),
    pytest.param(["replay", "{files}/good.csv", "--patient", "pt-1", "--via-gateway", "file:///etc/passwd",
                  "--token", "t"], ["http:// or https://"], id="gateway-url"),
])
def test_bad_argument(argv: list[str], fragments: list[str], down: dict[str, str], tmp_path: Path) -> None:
    assert_one_line(run_cli([a.format(files=tmp_path) for a in argv], down), 2, *fragments)


def test_bad_gateway_database_url_is_one_line_without_its_password(down: dict[str, str]) -> None:
    done = run_cli(["gateway"], {**down, "VITALS_GATEWAY_DATABASE_URL": "postgresql://g:hunter2@[::1/v"})
    assert_one_line(done, 2, "VITALS_GATEWAY_DATABASE_URL:", "libpq URL")
    assert "hunter2" not in done.stderr
