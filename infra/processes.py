"""Start, watch and stop the local service processes (Kafka, PostgreSQL) without Docker.

Each service runs detached in its own session with its pid in ``<dir>/pid`` and its output in
``<dir>/*.log``, so ``start`` is idempotent across shells and ``stop`` finds it again.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from infra.errors import ServiceFailed
from kernel.settings import Settings

logger = logging.getLogger(__name__)

#: How long ``stop`` waits after SIGTERM before it sends SIGKILL.
STOP_GRACE_S = 30.0


def read_pid(pid_file: Path) -> int | None:
    """The pid recorded in ``pid_file`` if that process is still alive, else ``None``."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, owned by another user (PostgreSQL run unprivileged)
        return pid
    if _is_zombie(pid):
        return None
    return pid


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def spawn(argv: Sequence[str], *, log_file: Path, pid_file: Path, env: dict[str, str] | None = None,
          preexec: Callable[[], None] | None = None) -> int:
    """Start ``argv`` detached from this process group, appending its output to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - argv is built by this package, never from user text
            list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env, preexec_fn=preexec,
        )
    pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def terminate(pid_file: Path, *, name: str, grace_s: float = STOP_GRACE_S,
              stop_signal: signal.Signals = signal.SIGTERM) -> bool:
    """Stop the process in ``pid_file``: ``stop_signal``, then SIGKILL after ``grace_s``.

    Returns whether a process was running.
    """
    pid = read_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    logger.info("stopping %s (pid %d)", name, pid)
    os.kill(pid, stop_signal)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if read_pid(pid_file) is None:
            break
        _reap(pid)
        time.sleep(0.1)
    else:
        logger.warning("%s did not stop within %.0f s; killing it", name, grace_s)
        os.kill(pid, signal.SIGKILL)
        _reap(pid)
    pid_file.unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    """Collect a child we started ourselves, so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def port_open(host: str, port: int, *, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_until(check: Callable[[], bool], *, timeout_s: float, what: str, log_file: Path,
               pid_file: Path | None = None) -> None:
    """Poll ``check`` until it is true; raise :class:`ServiceFailed` otherwise.

    The error is one line, as ``vitalrisk`` prints it: the log's last line and where the log is.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if pid_file is not None and read_pid(pid_file) is None:
            raise ServiceFailed(f"{what} exited during start-up ({_last_line(log_file)}); see {log_file}")
        time.sleep(0.25)
    raise ServiceFailed(f"{what} not healthy after {timeout_s:.0f} s ({_last_line(log_file)}); see {log_file}")


def _last_line(path: Path) -> str:
    """The log's last non-empty line, quoted, or a note that there is none."""
    lines = [line.strip() for line in tail(path, lines=10).splitlines() if line.strip()]
    return f"last log line: {lines[-1]!r}" if lines else "its log is empty"


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file, or a note that it is missing."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no log at {path})"


#: Where :func:`free_port` looks: below Linux's ephemeral range (32768-60999), where the kernel
#: picks every client socket's local port, and apart from the ports the project's services and
#: test sessions use by default (15432, 19092, 25432, 29092 and the ports after them).
FREE_PORTS = range(21000, 25000)
# One shuffled pass through FREE_PORTS per process, so one process never hands out a port twice
# (a child may not have bound the first yet) and processes started together start apart.
_free_port_candidates = iter(random.Random(os.getpid() ^ time.time_ns()).sample(FREE_PORTS, len(FREE_PORTS)))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for a child process to bind).

    Not the kernel's pick (binding port 0): that comes from the ephemeral range, where any
    client connection made before the child binds (to Kafka, PostgreSQL, another test
    process) may take the same port as its local one, and the child then cannot listen.

    >>> free_port() in FREE_PORTS
    True
    """
    for port in _free_port_candidates:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise ServiceFailed(f"no free TCP port left in {FREE_PORTS.start}-{FREE_PORTS.stop - 1} for this process")


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    """This process's environment with every ``VITALS_*`` replaced by ``settings`` (then ``extra``).

    The one way a parent hands its settings to a ``vitalrisk`` child process.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITALS_")}
    env.update(settings.as_env())
    env.update(extra)
    return env
