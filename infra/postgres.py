"""The local PostgreSQL: a throwaway cluster from Debian's server binaries, on 127.0.0.1.

``initdb`` refuses to run as root, so when we are root (as CI is) the cluster belongs to the
unprivileged ``nobody`` user and every server binary runs under it. ``nobody`` must be able to
enter every folder above the data directory; a clone inside root's home folder (mode 0700) or a
``mktemp -d`` folder is not, so there the data directory moves to
``/var/tmp/vitalrisk-postgres-<hash of the state folder>/`` instead of ``<state_dir>/postgres/``
(the pid file and log stay where they were). The user's own folders are never loosened.

When the TimescaleDB extension is installed on this machine the server preloads it (and turns
its telemetry off: these machines reach no network). Authentication is ``trust``
on loopback: the cluster is disposable, listens on 127.0.0.1 only and holds simulated data.
Roles still matter: the pipeline writes as ``vitalrisk_writer`` and Grafana reads as
``vitalrisk_reader`` (created by the migrations), never as the superuser.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infra.errors import ServiceFailed, ToolMissing
from infra.processes import read_pid, spawn, terminate, wait_until
from kernel.settings import Settings

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0
SUPERUSER = "postgres"
UNPRIVILEGED_USER = "nobody"
#: Where a root-run cluster keeps its data when ``nobody`` cannot reach the state folder.
SHARED_TMP = Path("/var/tmp")  # noqa: S108 - the parent only: PostgreSQL keeps its data in a 0700 folder of its own


def server_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb``."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if not found:
        raise ToolMissing("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin "
                          "(install Debian's postgresql package)")
    return Path(found[-1]).parent


def timescale_installed(bin_dir: Path) -> bool:
    """Whether the TimescaleDB extension's library sits beside this server's other modules."""
    return (bin_dir.parent / "lib" / "timescaledb.so").exists()


def reachable_by(path: Path, uid: int, gids: set[int]) -> bool:
    """Whether a process of ``uid`` (member of ``gids``) may enter every existing folder down to ``path``.

    Judged from the mode bits (ACLs aside), owner first, then group, then others, as the kernel does.

    >>> reachable_by(Path("/"), 65534, {65534})
    True
    """
    for folder in [*reversed(path.parents), path]:
        try:
            st = folder.stat()
        except FileNotFoundError:
            break
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid in gids:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


@dataclass(frozen=True, slots=True)
class PostgresTarget:
    """Host, port and database name that a libpq URL points at."""

    host: str
    port: int
    dbname: str

    @classmethod
    def from_url(cls, url: str) -> PostgresTarget:
        """Parse the parts we need.

        >>> PostgresTarget.from_url("postgresql://w@127.0.0.1:15432/vitalrisk")
        PostgresTarget(host='127.0.0.1', port=15432, dbname='vitalrisk')
        """
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(url)
        return cls(str(parts.get("host", "127.0.0.1")), int(str(parts.get("port", 5432))),
                   str(parts.get("dbname", "vitalrisk")))


class LocalPostgres:
    """Start, stop and inspect the throwaway PostgreSQL cluster under ``<state_dir>/postgres``."""

    def __init__(self, settings: Settings, *, timescale: bool | None = None) -> None:
        """``timescale``: preload TimescaleDB; ``None`` preloads it when it is installed."""
        self.settings = settings
        self.root = settings.state_dir.resolve() / "postgres"
        self.pid_file = self.root / "pid"
        self.log = self.root / "postgres.log"
        self.target = PostgresTarget.from_url(settings.database_url)
        if self.target.host not in ("127.0.0.1", "localhost"):
            raise ValueError(f"the local PostgreSQL listens on 127.0.0.1 only, not {self.target.host!r}")
        self.bin = server_bin_dir()
        self.timescale = timescale_installed(self.bin) if timescale is None else timescale
        self.home = self.root  # where the data directory and socket live; settled by start()
        self.data = self.home / "data"

    @property
    def superuser_url(self) -> str:
        """URL of the cluster's superuser, for migrations and tests of the local cluster only."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.target.port}/{self.target.dbname}"

    def running(self) -> bool:
        return read_pid(self.pid_file) is not None

    def healthy(self) -> bool:
        if not self.running():
            return False
        done = subprocess.run([str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1",
                               "-p", str(self.target.port)], capture_output=True)
        return done.returncode == 0

    def start(self) -> None:
        """Create the cluster if needed, start it, wait until it accepts connections."""
        if self.healthy():
            logger.info("postgres already running on 127.0.0.1:%d", self.target.port)
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            self.home = self._server_home()
            self.data = self.home / "data"
            if self.home != self.root:
                logger.info("%s cannot enter %s: the PostgreSQL data folder is %s", UNPRIVILEGED_USER,
                            self.root, self.data)
                self.home.mkdir(mode=0o700, exist_ok=True)
                owner = self.home.lstat()
                if not stat.S_ISDIR(owner.st_mode) or owner.st_uid not in (0, pwd.getpwnam(UNPRIVILEGED_USER).pw_uid):
                    # /var/tmp is world-writable: refuse a folder (or link) someone else planted there.
                    raise ServiceFailed(f"{self.home} exists but is not a folder of root or {UNPRIVILEGED_USER}; "
                                        "remove it and start again")
            self._hand_over(self.home)
            if not (self.data / "PG_VERSION").exists():
                self._initdb()
            argv = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.target.port),
                    "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.home}",
                    "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                    "-c", "max_connections=200", "-c", "shared_buffers=256MB"]
            if self.timescale:
                # Room for TimescaleDB's scheduler and its policy jobs (each job is a background
                # worker; with PostgreSQL's default of 8, jobs due together fail to start).
                argv += ["-c", "shared_preload_libraries=timescaledb", "-c", "timescaledb.telemetry_level=off",
                         "-c", "max_worker_processes=32", "-c", "timescaledb.max_background_workers=16"]
            spawn(argv, log_file=self.log, pid_file=self.pid_file, preexec=self._demote())
            wait_until(self.healthy, timeout_s=START_TIMEOUT_S, what="PostgreSQL", log_file=self.log,
                       pid_file=self.pid_file)
            logger.info("postgres started on 127.0.0.1:%d", self.target.port)
        self._create_database()

    def stop(self) -> bool:
        # SIGINT is PostgreSQL's "fast" shutdown: it does not wait for clients to disconnect.
        return terminate(self.pid_file, name="postgres", stop_signal=signal.SIGINT)

    def discard_storage(self) -> None:
        """Delete the stopped cluster's data folder, wherever :meth:`start` put it (see the module docstring)."""
        if self.running():
            raise ServiceFailed("postgres is running; stop it before discarding its storage")
        self.home = self._server_home()
        shutil.rmtree(self.home / "data", ignore_errors=True)
        if self.home != self.root:
            shutil.rmtree(self.home, ignore_errors=True)

    def status(self) -> str:
        state = "healthy" if self.healthy() else ("starting" if self.running() else "stopped")
        flavour = " + timescaledb" if self.timescale else ""
        return f"postgres ({self.bin.parent.name}{flavour}) on 127.0.0.1:{self.target.port}: {state}"

    def _server_home(self) -> Path:
        """The folder holding the data directory and socket: ``self.root`` unless ``nobody`` cannot reach it."""
        if os.geteuid() != 0:
            return self.root
        user = pwd.getpwnam(UNPRIVILEGED_USER)
        gids = {user.pw_gid, *os.getgrouplist(user.pw_name, user.pw_gid)}
        if reachable_by(self.root.parent, user.pw_uid, gids):
            return self.root
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        return SHARED_TMP / f"vitalrisk-postgres-{digest}"

    def _initdb(self) -> None:
        argv = [str(self.bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                "--encoding=UTF8", "--no-locale", "--no-sync"]
        done = subprocess.run(argv, capture_output=True, text=True, preexec_fn=self._demote())
        if done.returncode != 0:
            raise ServiceFailed(f"initdb failed:\n{done.stdout}{done.stderr}")

    def _create_database(self) -> None:
        import psycopg
        from psycopg import sql

        admin = f"postgresql://{SUPERUSER}@127.0.0.1:{self.target.port}/postgres"
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (self.target.dbname,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.target.dbname)))

    def _hand_over(self, path: Path) -> None:
        """As root, give the cluster folder to the unprivileged user the server runs as."""
        if os.geteuid() != 0:
            return
        user = pwd.getpwnam(UNPRIVILEGED_USER)
        for folder, _, files in os.walk(path):
            os.chown(folder, user.pw_uid, user.pw_gid)
            for name in files:
                os.chown(os.path.join(folder, name), user.pw_uid, user.pw_gid)

    def _demote(self) -> Callable[[], None] | None:
        """A pre-exec hook dropping root to the unprivileged user; ``None`` if we are not root."""
        if os.geteuid() != 0:
            return None
        user = pwd.getpwnam(UNPRIVILEGED_USER)

        def demote() -> None:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)

        return demote
