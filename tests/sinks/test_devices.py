"""Device credentials on the real PostgreSQL: enrol, list, revoke, look up; the gateway role's least privilege."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import errors

from gateway.tokens import issue_token, matches
from sinks.devices import DeviceDirectory, enroll, list_devices, revoke
from sinks.errors import DeviceAlreadyEnrolled, SinkUnavailable, UnknownDevice
from tests.conftest import TEST_PG_PORT
from tests.sinks.conftest import Database

pytestmark = pytest.mark.integration


def gateway_url(db: Database) -> str:
    return f"postgresql://vitalrisk_gateway@127.0.0.1:{TEST_PG_PORT}/{db.name}"


def _refused(conn: psycopg.Connection, statement: str) -> None:
    with pytest.raises(errors.InsufficientPrivilege):
        with conn.transaction():
            conn.execute(statement)


def test_enrol_list_revoke_and_enrol_again(db: Database) -> None:
    row, issued = enroll(db.owner_url, device_id="dev-1", patient_id="pt-1", issue=issue_token)
    assert (row.device_id, row.patient_id, row.token_id, row.revoked_at) == ("dev-1", "pt-1", issued.token_id, None)
    with pytest.raises(DeviceAlreadyEnrolled):
        enroll(db.owner_url, device_id="dev-1", patient_id="pt-2", issue=issue_token)
    enroll(db.owner_url, device_id="dev-2", patient_id="pt-2", issue=issue_token)
    assert [r.device_id for r in list_devices(db.owner_url, patient_id="pt-1")] == ["dev-1"]
    assert revoke(db.owner_url, "dev-1").revoked_at is not None
    with pytest.raises(UnknownDevice):
        revoke(db.owner_url, "dev-1")
    assert [r.device_id for r in list_devices(db.owner_url)] == ["dev-2"]
    _, renewed = enroll(db.owner_url, device_id="dev-1", patient_id="pt-3", issue=issue_token)  # reassigned
    history = list_devices(db.owner_url, include_revoked=True)
    assert sorted((r.device_id, r.patient_id, r.revoked_at is None) for r in history) == [
        ("dev-1", "pt-1", False), ("dev-1", "pt-3", True), ("dev-2", "pt-2", True)]
    with psycopg.connect(db.owner_url) as conn:
        stored = {row[0]: bytes(row[1]) for row in conn.execute("SELECT token_id, token_sha256 FROM gateway.devices")}
    assert matches(renewed.token, stored[renewed.token_id])
    assert all(renewed.token.encode() not in digest for digest in stored.values())


def test_a_token_id_drawn_twice_is_drawn_again(db: Database) -> None:
    first = issue_token()
    draws = iter([first, first, issue_token()])
    enroll(db.owner_url, device_id="dev-1", patient_id="pt-1", issue=lambda: first)
    _, issued = enroll(db.owner_url, device_id="dev-2", patient_id="pt-1", issue=lambda: next(draws))
    assert issued.token_id != first.token_id


def test_ids_follow_the_id_rule() -> None:
    with pytest.raises(ValueError, match="patient_id"):
        enroll("postgresql://nowhere", device_id="dev-1", patient_id="Jane Doe", issue=issue_token)


def test_the_gateway_role_reads_credentials_and_writes_last_seen_only(db: Database) -> None:
    enroll(db.owner_url, device_id="dev-1", patient_id="pt-1", issue=issue_token)
    with psycopg.connect(gateway_url(db), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM gateway.devices").fetchone() == (1,)
        conn.execute("UPDATE gateway.devices SET last_seen = now()")
        _refused(conn, "UPDATE gateway.devices SET revoked_at = NULL")
        _refused(conn, "UPDATE gateway.devices SET patient_id = 'pt-2'")
        _refused(conn, "INSERT INTO gateway.devices (token_id, device_id, patient_id, token_sha256) "
                       "VALUES ('0123456789ab', 'dev-9', 'pt-9', sha256('x'))")
        _refused(conn, "DELETE FROM gateway.devices")
        _refused(conn, "TRUNCATE gateway.devices")
        _refused(conn, "SELECT * FROM features LIMIT 1")  # nothing of the pipeline's data
        _refused(conn, "SELECT * FROM risk_scores LIMIT 1")
        _refused(conn, "CREATE TABLE gateway.sneaky (x integer)")
        _refused(conn, "CREATE TABLE sneaky (x integer)")
        row = conn.execute("SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles "
                           "WHERE rolname = current_user").fetchone()
        assert row == (False, False, False, False)


def test_neither_the_writer_nor_grafanas_reader_sees_token_digests(db: Database) -> None:
    enroll(db.owner_url, device_id="dev-1", patient_id="pt-1", issue=issue_token)
    for url in (db.writer_url, db.reader_url):
        with psycopg.connect(url, autocommit=True) as conn:
            _refused(conn, "SELECT token_sha256 FROM gateway.devices")
            _refused(conn, "INSERT INTO gateway.devices (token_id, device_id, patient_id, token_sha256) "
                           "VALUES ('0123456789ab', 'dev-9', 'pt-9', sha256('x'))")


def test_the_directory_looks_up_and_touches_through_the_gateway_role(db: Database) -> None:
    row, issued = enroll(db.owner_url, device_id="dev-1", patient_id="pt-1", issue=issue_token)

    async def main() -> None:
        async with DeviceDirectory(gateway_url(db)) as directory:
            found = await directory.lookup(issued.token_id)
            assert found is not None and (found.device_id, found.patient_id, found.revoked) == ("dev-1", "pt-1", False)
            assert matches(issued.token, found.token_sha256) and issued.token_id in repr(found)
            assert "token_sha256" not in repr(found)
            assert await directory.lookup("ffffffffffff") is None
            later = datetime.now(UTC) + timedelta(seconds=5)
            await directory.touch({issued.token_id: later})
            await directory.touch({issued.token_id: later - timedelta(hours=1)})  # never backwards
            revoke(db.owner_url, "dev-1")
            again = await directory.lookup(issued.token_id)
            assert again is not None and again.revoked
            await asyncio.sleep(0)
        seen = list_devices(db.owner_url, include_revoked=True)[0].last_seen
        assert seen is not None and abs((seen - later).total_seconds()) < 0.001

    asyncio.run(main())


def test_an_unreachable_database_is_sink_unavailable(db: Database) -> None:
    async def main() -> None:
        async with DeviceDirectory(f"postgresql://vitalrisk_gateway@127.0.0.1:1/{db.name}") as directory:
            with pytest.raises(SinkUnavailable):
                await directory.lookup("0123456789ab")

    asyncio.run(main())
    with pytest.raises(SinkUnavailable):
        list_devices(f"postgresql://postgres@127.0.0.1:1/{db.name}")
