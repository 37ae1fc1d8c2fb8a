"""The local PostgreSQL: a throwaway cluster from Debian's server binaries, on 127.0.0.1.

``initdb`` refuses to run as root, so when we are root (as CI is) the cluster belongs to the
unprivileged ``nobody`` user and every server binary runs under it. ``nobody`` must be able to
enter every folder above the data directory; a clone inside root's home folder (mode 0700) or a
``mktemp -d`` folder is not, so there the data directory moves to
``/var/tmp/vitalrisk-postgres-<hash of the state folder>/`` instead of ``<state_dir>/postgres/``
(the pid file and log stay where they were). The user's own folders are never loosened.

When the TimescaleDB extension is installed on this machine the server preloads it (and turns
its telemetry off: these machines reach no network). By default authentication is ``trust``
on loopback: the cluster is disposable, listens on 127.0.0.1 only and holds simulated data.
Roles still matter: each service connects as its own role (``vitalrisk_worker``,
``vitalrisk_trainer``, ``vitalrisk_alerter``, ``vitalrisk_gateway``; Grafana as
``vitalrisk_reader``), created by the migrations, never as the superuser.

Secured (``vitalrisk infra start postgres --secure``), the same cluster serves TLS only, with
SCRAM-SHA-256 passwords instead of trust: a throwaway CA and a server certificate for
``127.0.0.1`` and ``localhost`` are made at the first secured start (``<state_dir>/postgres/tls/ca.pem``
is the CA clients verify against); every role gets a random password, written to a libpq passfile
(``<state_dir>/postgres/passfile``, mode 0600), and given to the server as a SCRAM verifier, so the
password itself never reaches the server or its log. ``pg_hba.conf`` then has ``hostssl`` lines
only: a connection without TLS, or without the password, is refused. Clients name the CA and the
passfile in their URL (:meth:`LocalPostgres.url`), with ``sslmode=verify-full``. The mode is kept
until the next start: a cluster started without ``--secure`` is plain again.
"""

from __future__ import annotations

import base64
import glob
import hashlib
import hmac
import logging
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

from infra.errors import ServiceFailed, ToolMissing
from infra.processes import read_pid, spawn, terminate, wait_until
from kernel.settings import (ALERTER_ROLE, DEPRECATED_WRITER_ROLE, GATEWAY_ROLE, READER_ROLE, TRAINER_ROLE,
                             WORKER_ROLE, Settings)

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0
SUPERUSER = "postgres"
UNPRIVILEGED_USER = "nobody"
#: Where a root-run cluster keeps its data when ``nobody`` cannot reach the state folder.
SHARED_TMP = Path("/var/tmp")  # noqa: S108 - the parent only: PostgreSQL keeps its data in a 0700 folder of its own
#: The roles a secured cluster gives passwords, made before the migrations would make them without one.
SECURED_ROLES = (WORKER_ROLE, TRAINER_ROLE, ALERTER_ROLE, GATEWAY_ROLE, READER_ROLE, DEPRECATED_WRITER_ROLE)
#: PBKDF2 rounds of the SCRAM verifiers, PostgreSQL's own default (``scram_iterations``).
SCRAM_ITERATIONS = 4096
#: pg_hba.conf of each mode: loopback only; secured, TLS and a SCRAM password for every connection.
_HBA_TRUST = ("local all all trust\n"
              "host all all 127.0.0.1/32 trust\n"
              "host all all ::1/128 trust\n")
_HBA_SECURED = ("local all all scram-sha-256\n"
                "hostssl all all 127.0.0.1/32 scram-sha-256\n"
                "hostssl all all ::1/128 scram-sha-256\n")


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


def scram_verifier(password: str, *, salt: bytes, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802, 7677), for ``ALTER ROLE``.

    Given the verifier, the server can check a password but never learn it; handed over instead of
    the password, the password appears in no statement the server runs or logs. ``password`` must be
    ASCII (PostgreSQL's SASLprep leaves ASCII as it is), as :func:`secrets.token_urlsafe` makes them.

    >>> scram_verifier("pencil", salt=b"0123456789abcdef")[:44]
    'SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$'
    """
    if not password.isascii():
        raise ValueError("the password must be ASCII")
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def read_passfile(path: Path) -> dict[str, str]:
    """``{role: password}`` of a libpq passfile's lines (``host:port:database:user:password``).

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", delete=False) as f:
    ...     _ = f.write("127.0.0.1:5432:*:vitalrisk_worker:abc\\n# a comment\\n")
    >>> read_passfile(Path(f.name))
    {'vitalrisk_worker': 'abc'}
    """
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        fields = line.split(":")
        if len(fields) == 5 and not line.startswith("#"):
            found[fields[3]] = fields[4]
    return found


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

    def __init__(self, settings: Settings, *, timescale: bool | None = None, secure: bool | None = None) -> None:
        """``timescale``: preload TimescaleDB; ``None`` preloads it when it is installed.

        ``secure``: serve TLS only, with SCRAM passwords (see the module docstring); ``None`` keeps
        the mode the cluster was last started in (plain for a new one).
        """
        self.settings = settings
        self.root = settings.state_dir.resolve() / "postgres"
        self.pid_file = self.root / "pid"
        self.log = self.root / "postgres.log"
        #: The CA a client verifies the server against (``sslrootcert``), and the roles' passwords (``passfile``).
        self.ca_file = self.root / "tls" / "ca.pem"
        self.passfile = self.root / "passfile"
        self._secured_marker = self.root / "secured"
        self.secure = self._secured_marker.exists() if secure is None else secure
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
        return self.url(SUPERUSER)

    def url(self, user: str | None, dbname: str | None = None) -> str:
        """A libpq URL of this cluster: as ``user`` (``None``: no user, so each service its own role) on
        ``dbname`` (default: the settings'); secured, with ``sslmode=verify-full``, the CA and the passfile.

        >>> LocalPostgres(Settings(database_url="postgresql://127.0.0.1:15433/v"), secure=False).url("me")
        'postgresql://me@127.0.0.1:15433/v'
        """
        who = f"{quote(user, safe='')}@" if user else ""
        base = f"postgresql://{who}127.0.0.1:{self.target.port}/{quote(dbname or self.target.dbname, safe='')}"
        if not self.secure:
            return base
        options = {"sslmode": "verify-full", "sslrootcert": self.ca_file, "passfile": self.passfile}
        return f"{base}?{urlencode(options, quote_via=quote, safe='/')}"

    def running(self) -> bool:
        return read_pid(self.pid_file) is not None

    def healthy(self) -> bool:
        if not self.running():
            return False
        done = subprocess.run([str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1",
                               "-p", str(self.target.port)], capture_output=True)
        return done.returncode == 0

    def start(self) -> None:
        """Create the cluster if needed, start it, wait until it accepts connections.

        Raises
        ------
        ServiceFailed
            The cluster did not start, or it runs already in the other mode (secured or not).
        """
        if self.healthy():
            if self._secured_marker.exists() != self.secure:
                running = "with TLS (--secure)" if self._secured_marker.exists() else "without TLS"
                raise ServiceFailed(f"postgres on 127.0.0.1:{self.target.port} is running {running}; stop it with "
                                    "`vitalrisk infra stop postgres` before starting it the other way")
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
            self._configure()
            argv = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.target.port),
                    "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.home}",
                    "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                    "-c", "max_connections=200", "-c", "shared_buffers=256MB"]
            if self.timescale:
                # Room for TimescaleDB's scheduler and its policy jobs (each job is a background
                # worker; with PostgreSQL's default of 8, jobs due together fail to start).
                argv += ["-c", "shared_preload_libraries=timescaledb", "-c", "timescaledb.telemetry_level=off",
                         "-c", "max_worker_processes=32", "-c", "timescaledb.max_background_workers=16"]
            if self.secure:  # server.crt and server.key in the data folder (_configure), PostgreSQL's defaults
                argv += ["-c", "ssl=on", "-c", "ssl_min_protocol_version=TLSv1.2",
                         "-c", "password_encryption=scram-sha-256"]
            spawn(argv, log_file=self.log, pid_file=self.pid_file, preexec=self._demote())
            wait_until(self.healthy, timeout_s=START_TIMEOUT_S, what="PostgreSQL", log_file=self.log,
                       pid_file=self.pid_file)
            logger.info("postgres started on 127.0.0.1:%d", self.target.port)
        self._create_database()

    def stop(self) -> bool:
        # SIGINT is PostgreSQL's "fast" shutdown: it does not wait for clients to disconnect.
        return terminate(self.pid_file, name="postgres", stop_signal=signal.SIGINT)

    def discard_storage(self) -> None:
        """Delete the stopped cluster's data folder, wherever :meth:`start` put it (see the module docstring),
        and its CA, passfile and mode."""
        if self.running():
            raise ServiceFailed("postgres is running; stop it before discarding its storage")
        self.home = self._server_home()
        shutil.rmtree(self.home / "data", ignore_errors=True)
        if self.home != self.root:
            shutil.rmtree(self.home, ignore_errors=True)
        shutil.rmtree(self.ca_file.parent, ignore_errors=True)
        self.passfile.unlink(missing_ok=True)
        self._secured_marker.unlink(missing_ok=True)

    def status(self) -> str:
        state = "healthy" if self.healthy() else ("starting" if self.running() else "stopped")
        flavour = " + timescaledb" if self.timescale else ""
        line = f"postgres ({self.bin.parent.name}{flavour}) on 127.0.0.1:{self.target.port}: {state}"
        if self.secure and state != "stopped":
            # No password in it: each role's is in the passfile, which the URL names.
            line += f", TLS + SCRAM; connect with VITALS_DATABASE_URL='{self.url(None)}'"
        return line

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

    def _configure(self) -> None:
        """Before a start: pg_hba.conf for the mode; secured, also the certificates, passwords and roles."""
        (self.data / "pg_hba.conf").write_text(_HBA_SECURED if self.secure else _HBA_TRUST)
        if self.secure:
            if not (self.data / "server.crt").exists() or not self.ca_file.exists():
                self._issue_certificates()
            self._set_passwords()
            self._secured_marker.touch()
        else:
            self._secured_marker.unlink(missing_ok=True)
        self._hand_over(self.home)

    def _issue_certificates(self) -> None:
        """A throwaway CA (its key is never stored) and the server's certificate for 127.0.0.1 and localhost."""
        import trustme  # only a secured start needs it (and the cryptography it loads)

        ca = trustme.CA(organization_name="vitalrisk local PostgreSQL")
        server = ca.issue_cert("127.0.0.1", "localhost", common_name="127.0.0.1")
        self.ca_file.parent.mkdir(parents=True, exist_ok=True)
        key = self.data / "server.key"
        key.unlink(missing_ok=True)
        with os.fdopen(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            out.write(server.private_key_pem.bytes())
        (self.data / "server.crt").write_bytes(b"".join(pem.bytes() for pem in server.cert_chain_pems))
        ca.cert_pem.write_to_path(str(self.ca_file))
        logger.info("issued a throwaway CA (%s) and a server certificate for 127.0.0.1 and localhost", self.ca_file)

    def _set_passwords(self) -> None:
        """Every role's password: kept in the passfile (made on the first secured start), set as SCRAM verifiers.

        Runs the server in single-user mode, which needs no authentication, so it works on a cluster
        made plain as well as on a new one; roles the migrations would make are made here first.
        """
        known = read_passfile(self.passfile) if self.passfile.exists() else {}
        passwords = {role: known.get(role) or secrets.token_urlsafe(24) for role in (SUPERUSER, *SECURED_ROLES)}
        lines = "".join(f"{host}:{self.target.port}:*:{role}:{password}\n"
                        for role, password in passwords.items() for host in ("127.0.0.1", "localhost"))
        fresh = self.passfile.with_name(f".{self.passfile.name}.new")
        fresh.unlink(missing_ok=True)
        with os.fdopen(os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            out.write(lines)
        fresh.replace(self.passfile)
        statements = []
        for role, password in passwords.items():
            if role != SUPERUSER:  # role names are our constants; verifiers are base64 and "$:", no quote
                statements.append(f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN "
                                  f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE; END IF; END $$;")
            verifier = scram_verifier(password, salt=secrets.token_bytes(16))
            statements.append(f"ALTER ROLE {role} PASSWORD '{verifier}';")
        done = subprocess.run([str(self.bin / "postgres"), "--single", "-D", str(self.data), "postgres"],
                              input="\n".join(statements) + "\n", capture_output=True, text=True,
                              preexec_fn=self._demote())
        if done.returncode != 0 or "ERROR:" in done.stderr + done.stdout:
            errors = [line for line in (done.stderr + done.stdout).splitlines() if "ERROR" in line or "FATAL" in line]
            raise ServiceFailed(f"setting the roles' passwords failed: {errors[0] if errors else done.returncode}")
        logger.info("roles' passwords are in %s (mode 0600)", self.passfile)

    def _create_database(self) -> None:
        import psycopg
        from psycopg import sql

        admin = self.url(SUPERUSER, "postgres")
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
