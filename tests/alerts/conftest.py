"""Fixtures of the alerting tests: the real alerter and pager processes, and score helpers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kernel.events import RiskScore
from infra.processes import child_env, free_port  # noqa: F401 - re-exported for the alert tests
from kernel.settings import ALERTER_ROLE, Settings
from tests.conftest import as_service

ROOT = Path(__file__).resolve().parents[2]
SECRET = "test-secret-not-for-production"
START_MS = 1_767_571_200_000  # 2026-01-05T00:00Z


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    """The child's environment: these settings with the tests' webhook secret and no API token."""
    env = child_env(settings, VITALS_WEBHOOK_SECRET=SECRET, **extra)
    env.pop("VITALS_ALERTER_API_TOKEN", None)
    return env


def news2_score(patient: str, minute: int, total: int, *, red: bool = False, risk: float | None = None,
                model_version: str = "rcp-2017-scale1") -> RiskScore:
    """A score for minute ``minute`` (window end) with NEWS2 ``total``; ``red`` puts a 3 on respiratory rate.

    The points are spread over the parameters, at most 2 each (3 for the red one), as on the chart.
    """
    subscores: dict[str, int] = {}
    left = total
    for i, name in enumerate(("respiratory_rate", "heart_rate", "spo2", "temperature", "systolic_bp", "consciousness")):
        points = min(left, 3 if red and i == 0 else 2)
        subscores[name] = points
        left -= points
    band = "high" if total >= 7 else "medium" if total >= 5 else "low-medium" if total >= 1 else "low"
    return RiskScore(patient_id=patient, window_start_ms=START_MS + (minute - 1) * 60_000, window_end_ms=START_MS + minute * 60_000, model_name="news2", model_version=model_version,
                     score=total / 20, news2_total=total, news2_band=band, inputs={}, contributions={k: float(v) for k, v in subscores.items() if v},
                     risks={} if risk is None else {"any": risk}, news2_subscores=subscores)


@dataclass
class Proc:
    """A child process with its log."""

    proc: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def wait_for(what: str, check: Callable[[], Any], *, timeout_s: float, procs: tuple[Proc, ...] = (),
             every_s: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; fail with the processes' logs otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for p in procs:
            if not p.alive():
                raise AssertionError(f"{p.log.name} exited with {p.proc.returncode} while waiting for {what}:\n"
                                     f"{p.tail()}")
        try:
            value = check()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(every_s)
    logs = "\n".join(f"--- {p.log.name}\n{p.tail()}" for p in procs)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{logs}")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class AlertingStack:
    """Settings for one test's alerter and pager, and starters for both."""

    settings: Settings
    pager_port: int
    record: Path
    tmp: Path
    running: list[Proc]

    def start_pager(self) -> Proc:
        log = self.tmp / f"pager-{len(self.running)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "stream.alerts", "pager", "--port", str(self.pager_port),
                                     "--record", str(self.record)], cwd=ROOT, env=env_for(self.settings),
                                    stdout=out, stderr=subprocess.STDOUT)
        pager = Proc(proc, log)
        self.running.append(pager)
        wait_for("the pager to listen", lambda: "listening" in pager.tail(), timeout_s=15, procs=(pager,))
        return pager

    def start_alerter(self) -> Proc:
        log = self.tmp / f"alerter-{len(self.running)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "stream.alerts", "alerter"], cwd=ROOT,
                                    env=env_for(as_service(self.settings, ALERTER_ROLE)), stdout=out,
                                    stderr=subprocess.STDOUT)
        alerter = Proc(proc, log)
        self.running.append(alerter)
        return alerter

    def api(self, path: str) -> str:
        return f"http://127.0.0.1:{self.settings.alerter_port}{path}"


@pytest.fixture
def alerting(isolated: Settings, tmp_path: Path) -> Iterator[AlertingStack]:
    """An alerter configured for the isolated topics and database, paging a pager on a free port."""
    pager_port = free_port()
    settings = isolated.model_copy(update={
        "alerter_port": free_port(), "metrics_port": free_port(),
        "webhook_receivers": f"pager=http://127.0.0.1:{pager_port}/webhook",
        "webhook_backoff_s": 0.2, "webhook_backoff_max_s": 2.0, "webhook_timeout_s": 2.0,
        "alert_data_stopped_s": 0.0, "alerter_flush_s": 0.1,
        "alert_external_url": "http://alerter.test", "alert_grafana_url": "http://grafana.test",
    })
    stack = AlertingStack(settings, pager_port, tmp_path / "pages.jsonl", tmp_path, [])
    yield stack
    for proc in stack.running:
        proc.stop(signal.SIGKILL)
