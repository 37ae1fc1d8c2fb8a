"""The local PostgreSQL as a newcomer meets it: a clone in a private folder, and a server that has
TimescaleDB installed but not preloaded."""

from __future__ import annotations

import logging
import os
import pwd
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from infra.postgres import UNPRIVILEGED_USER, LocalPostgres, reachable_by, server_bin_dir, timescale_installed
from infra.processes import free_port
from sinks.errors import MigrationFailed
from sinks.migrations import migrate
from kernel.settings import Settings

pytestmark = pytest.mark.integration


def test_reachable_by_follows_the_mode_bits_of_every_folder_above(tmp_path: Path) -> None:
    nobody = pwd.getpwnam(UNPRIVILEGED_USER)
    clone = tmp_path / "clone"
    (clone / ".local").mkdir(parents=True)
    tmp_path.chmod(0o711)
    above = reachable_by(tmp_path, nobody.pw_uid, {nobody.pw_gid})  # pytest's own folders are private
    clone.chmod(0o700)
    assert not reachable_by(clone / ".local", nobody.pw_uid, {nobody.pw_gid})
    clone.chmod(0o701)
    assert reachable_by(clone / ".local", nobody.pw_uid, {nobody.pw_gid}) == above
    assert reachable_by(clone / "not" / "made" / "yet", nobody.pw_uid, {nobody.pw_gid}) == above


@pytest.fixture(scope="module")
def private_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    """A cluster whose state folder sits in a 0700 folder (as in root's home), TimescaleDB not preloaded."""
    private = tmp_path_factory.mktemp("private")
    private.chmod(0o700)
    settings = Settings(state_dir=private / "clone" / ".local",
                        database_url=f"postgresql://vitalrisk_writer@127.0.0.1:{free_port()}/vitalrisk")
    cluster = LocalPostgres(settings, timescale=False)
    cluster.start()
    yield cluster
    cluster.stop()
    cluster.discard_storage()
    assert not cluster.data.exists()


def test_a_cluster_starts_from_a_private_folder(private_cluster: LocalPostgres) -> None:
    assert private_cluster.healthy()
    if os.geteuid() == 0:  # the server runs as nobody, who cannot enter the 0700 folder
        assert not private_cluster.data.is_relative_to(private_cluster.root.parent.parent.parent)
        assert oct(private_cluster.root.parent.parent.parent.stat().st_mode & 0o777) == "0o700", "left as it was"
    else:
        assert private_cluster.data == private_cluster.root / "data"
    with psycopg.connect(private_cluster.superuser_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.skipif(not timescale_installed(server_bin_dir()), reason="TimescaleDB is not installed here")
def test_migrate_falls_back_to_plain_postgres_when_timescaledb_is_not_preloaded(
        private_cluster: LocalPostgres, caplog: pytest.LogCaptureFixture) -> None:
    dbname = f"unpreloaded_{uuid.uuid4().hex[:8]}"
    admin = private_cluster.superuser_url.rsplit("/", 1)[0]
    with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
        assert conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    with caplog.at_level(logging.WARNING, logger="sinks.migrations"):
        applied = migrate(f"{admin}/{dbname}")
    assert applied, "every migration ran"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "shared_preload_libraries" in warnings[0] and "\n" not in warnings[0], warnings
    with psycopg.connect(f"{admin}/{dbname}") as conn:
        assert conn.execute("SELECT bool_or(timescale) FROM schema_migrations").fetchone() == (False,)
        assert conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone() is None
    with pytest.raises(MigrationFailed, match="shared_preload_libraries"):
        with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname + "_on")))
        migrate(f"{admin}/{dbname}_on", timescale="on")
