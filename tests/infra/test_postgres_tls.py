"""PostgreSQL with TLS and SCRAM (``vitalrisk infra start postgres --secure``), end to end.

``sslmode=verify-full`` against the cluster's throwaway CA works for every role and every process
(the CLI, a real worker); a wrong CA, a wrong host name, no TLS or a wrong password is refused,
with one line through the CLI that names no password.
"""

from __future__ import annotations

import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import trustme
from kafka import KafkaProducer

from infra.postgres import SUPERUSER, LocalPostgres, read_passfile
from infra.processes import child_env
from kernel.settings import (ALERTER_ROLE, DEPRECATED_WRITER_ROLE, GATEWAY_ROLE, READER_ROLE, TRAINER_ROLE,
                             WORKER_ROLE, Settings, redact_url, role_url)
from kernel.wire import encode_device_message
from tests.conftest import ROOT, WorkerProcess
from tests.test_cli_failures import assert_one_line

pytestmark = pytest.mark.integration

ROLES = (WORKER_ROLE, TRAINER_ROLE, ALERTER_ROLE, GATEWAY_ROLE, READER_ROLE, DEPRECATED_WRITER_ROLE)


def _cli(args: list[str], url: str) -> subprocess.CompletedProcess[str]:
    env = child_env(Settings(database_url=url))
    return subprocess.run([sys.executable, "-m", "stream.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def test_every_role_connects_with_verify_full_and_its_grants(secured_db: str) -> None:
    for role in ROLES:
        with psycopg.connect(role_url(secured_db, role)) as conn:
            row = conn.execute("SELECT current_user, s.ssl, s.version FROM pg_stat_ssl s "
                               "WHERE s.pid = pg_backend_pid()").fetchone()
            assert row is not None and row[:2] == (role, True) and row[2].startswith("TLSv1."), row
            assert conn.info.get_parameters()["sslmode"] == "verify-full"
    with psycopg.connect(role_url(secured_db, WORKER_ROLE)) as conn:  # the roles are the plain cluster's
        conn.execute("INSERT INTO features VALUES ('pt-1', 'hr', now(), now(), 1, 1, 1, 1)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO silences (silence_id, starts_at, ends_at, created_by, reason) "
                         "VALUES ('s', now(), now() + interval '1 hour', 'x', 'y')")


def test_the_cli_works_through_verify_full(secured_db: str) -> None:
    done = _cli(["silence", "--patient", "pt-1", "--minutes", "5", "--by", "rn-1", "--reason", "test"], secured_db)
    assert done.returncode == 0, done.stderr
    assert "silence" in done.stdout
    with psycopg.connect(role_url(secured_db, READER_ROLE)) as conn:
        assert conn.execute("SELECT created_by FROM silences").fetchall() == [("rn-1",)]


def _other_ca(tmp_path: Path) -> Path:
    path = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


@pytest.mark.parametrize("case, fragments", [
    ("wrong CA", ["TLS failed", "certificate verify failed"]),
    ("wrong host name", ["TLS failed", "does not match host name"]),
    ("no TLS", ["requires TLS", "no encryption"]),
    ("wrong password", ["refused the connection", "password authentication failed"]),
])
def test_a_connection_that_cannot_be_trusted_is_refused_in_one_line(
        secured_postgres: LocalPostgres, secured_db: str, tmp_path: Path, case: str, fragments: list[str]) -> None:
    dbname = secured_db.split("?")[0].rsplit("/", 1)[1]
    port = secured_postgres.target.port
    ca, passfile = secured_postgres.ca_file, secured_postgres.passfile
    wrong_password = "not-the-password-0123456789"
    url = {
        "wrong CA": f"postgresql://127.0.0.1:{port}/{dbname}?sslmode=verify-full&sslrootcert={_other_ca(tmp_path)}"
                    f"&passfile={passfile}",
        "wrong host name": f"postgresql://wrong.example:{port}/{dbname}?hostaddr=127.0.0.1&sslmode=verify-full"
                           f"&sslrootcert={ca}&passfile={passfile}",
        "no TLS": f"postgresql://127.0.0.1:{port}/{dbname}?sslmode=disable&passfile={passfile}",
        "wrong password": f"postgresql://{ALERTER_ROLE}:{wrong_password}@127.0.0.1:{port}/{dbname}"
                          f"?sslmode=verify-full&sslrootcert={ca}",
    }[case]
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(role_url(url, ALERTER_ROLE) if case != "wrong password" else url, connect_timeout=5).close()
    done = _cli(["ack", "al-1", "--by", "rn-1"], url)
    assert_one_line(done, 1, *fragments)
    assert wrong_password not in done.stderr + done.stdout
    for password in read_passfile(passfile).values():
        assert password not in done.stderr + done.stdout


def test_passwords_stay_in_the_private_passfile(secured_postgres: LocalPostgres) -> None:
    passwords = read_passfile(secured_postgres.passfile)
    assert set(passwords) == {SUPERUSER, *ROLES}
    assert stat.S_IMODE(secured_postgres.passfile.stat().st_mode) == 0o600
    with psycopg.connect(secured_postgres.url(SUPERUSER, "postgres")) as conn:
        stored = dict(conn.execute("SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(%s)",
                                   (list(passwords),)).fetchall())
    for role, password in passwords.items():  # the server holds verifiers, never the passwords
        assert stored[role].startswith("SCRAM-SHA-256$4096:") and password not in stored[role], role
    status = secured_postgres.status()
    assert "TLS + SCRAM" in status and "sslmode=verify-full" in status
    log = secured_postgres.log.read_text(errors="replace")
    for password in passwords.values():
        assert password not in status and password not in log
    url = f"postgresql://{WORKER_ROLE}:{passwords[WORKER_ROLE]}@127.0.0.1:1/x"
    assert passwords[WORKER_ROLE] not in redact_url(url) + repr(Settings(database_url=url))


def test_a_worker_writes_through_verify_full(secured_db: str, isolated: Settings,
                                             start_worker: Callable[[Settings], WorkerProcess]) -> None:
    settings = isolated.model_copy(update={"database_url": role_url(secured_db, WORKER_ROLE),
                                           "admin_database_url": None})
    worker = start_worker(settings)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    start_ms = 1_767_571_200_000
    for minute in range(3):
        t0 = start_ms + minute * 60_000
        producer.send(settings.readings_topic, key=b"pt-1", timestamp_ms=t0 + 60_000,
                      value=encode_device_message(device_id="dev-1", patient_id="pt-1", seq=minute,
                                                  sent_at=t0 + 60_000, readings=[("heart_rate", t0 + 1_000, 72.0)]))
    producer.flush()
    producer.close()
    worker.wait_metric("vitals_sink_rows_total", lambda v: v >= 3, timeout_s=90)
    deadline = time.monotonic() + 10
    with psycopg.connect(role_url(secured_db, READER_ROLE)) as conn:
        while conn.execute("SELECT count(*) FROM features").fetchone() == (0,) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert conn.execute("SELECT count(*) FROM features WHERE patient_id = 'pt-1'").fetchone() != (0,)
    assert worker.proc.poll() is None, worker.log.read_text()[-2000:]
