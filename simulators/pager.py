"""``vitalrisk pager``: a stand-in for the care coordinators' paging system.

It receives the alerter's webhooks on ``POST /webhook`` and

- verifies the HMAC signature (:func:`sinks.signing.verify`): a missing, malformed, stale
  (more than 5 min off) or wrong signature gets **401** and is not recorded as a page;
- deduplicates by ``Idempotency-Key``: a copy gets 200 with ``"duplicate": true`` and pages
  nobody twice (keys survive a restart when ``record_path`` is set);
- logs ids only (notification, alert, patient, kind), never a vital value;
- acknowledges with **200**;
- appends one JSON line per accepted request to ``record_path`` (``received_at`` unix seconds,
  ``idempotency_key``, ``duplicate``, and the body) for tests and benchmarks.

``POST /grafana`` takes Grafana's own webhook contact point (``Authorization: Bearer <token>``)
when a Grafana token is configured; ``GET /healthz`` answers ``{"status": "ok"}``.

Examples
--------
>>> pager = Pager([b"k"], clock=lambda: 1_700_000_000.0)
>>> from sinks.signing import signed_headers
>>> headers = signed_headers(b"k", b'{"alerts":[]}', "al-1:firing", now_s=1_700_000_000)
>>> pager.accept(b'{"alerts":[]}', headers)
(200, {'status': 'ok', 'duplicate': False})
>>> pager.accept(b'{"alerts":[]}', headers)
(200, {'status': 'ok', 'duplicate': True})
>>> pager.accept(b'{"alerts":[]}', {**headers, "X-Vitalrisk-Signature": "t=1700000000,v2=00"})[0]
401
>>> pager.accept(b'{"alerts":[]}', {**headers, "Idempotency-Key": "al-1:resolved"})  # the key is signed
(401, {'status': 'rejected', 'reason': 'mismatch'})
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from sinks.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, SIGNATURE_TOLERANCE_S, TIMESTAMP_HEADER, verify
from kernel.errors import ConfigurationError, SignatureInvalid, listen_failed
from kernel.settings import Settings

logger = logging.getLogger(__name__)

MAX_BODY = 256 * 1024


class Pager:
    """The receiver's logic, without HTTP: verify, deduplicate, record.

    Parameters
    ----------
    secrets
        Accepted HMAC keys (two while one is rotated).
    record_path
        JSONL file of accepted requests; its keys are loaded at start, so a restarted pager still
        recognises copies.
    tolerance_s
        Largest accepted signature age, seconds.
    clock
        Unix-seconds clock.
    """

    def __init__(self, secrets: Sequence[bytes], *, record_path: Path | None = None,
                 tolerance_s: float = SIGNATURE_TOLERANCE_S, clock: Callable[[], float] = time.time) -> None:
        if not secrets or not all(secrets):
            raise ConfigurationError("the pager needs a non-empty webhook secret")
        self.secrets = list(secrets)
        self.record_path = record_path
        self.tolerance_s = tolerance_s
        self._clock = clock
        self.seen: set[str] = set()
        self.accepted = 0
        self.duplicates = 0
        self.rejected = 0
        if record_path is not None:
            self._load_keys(record_path)

    def _load_keys(self, record_path: Path) -> None:
        """Remember the keys already recorded, and check now that the file can be appended to.

        Raises
        ------
        ConfigurationError
            If the file cannot be opened for appending, or a line of it is not a record.
        """
        try:
            with record_path.open("a+") as records:
                records.seek(0)
                lines = records.read().splitlines()
        except OSError as exc:
            raise ConfigurationError(f"cannot append to the pager's record {record_path}: "
                                     f"{exc.strerror or exc}") from None
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                raise ConfigurationError(f"{record_path}: line {number} is not a JSON record; "
                                         "pass another --record file") from None
            key = entry.get("idempotency_key") if isinstance(entry, dict) else None
            if key:
                self.seen.add(key)

    def accept(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """Handle one webhook: ``(status, JSON answer)``."""
        received_at = self._clock()
        try:
            verify(self.secrets, body, headers.get(SIGNATURE_HEADER), headers.get(TIMESTAMP_HEADER),
                   headers.get(IDEMPOTENCY_HEADER), now_s=received_at, tolerance_s=self.tolerance_s)
        except SignatureInvalid as exc:
            self.rejected += 1
            logger.warning("rejected webhook: %s signature", exc.reason)
            return 401, {"status": "rejected", "reason": exc.reason}
        key = headers[IDEMPOTENCY_HEADER]  # signed, so present
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            self.rejected += 1
            return 400, {"status": "rejected", "reason": "body is not JSON"}
        duplicate = key in self.seen
        self.seen.add(key)
        if duplicate:
            self.duplicates += 1
        else:
            self.accepted += 1
        alerts = payload.get("alerts", []) if isinstance(payload, dict) else []
        for alert in alerts if isinstance(alerts, list) else []:
            labels = alert.get("labels") if isinstance(alert, dict) else None
            if not isinstance(labels, dict):
                continue
            logger.info("page %s%s: alert %s, patient %s, %s, %s", key, " (duplicate)" if duplicate else "",
                        labels.get("alert_id"), labels.get("patient_id"), labels.get("kind"), alert.get("status"))
        self.record({"received_at": received_at, "idempotency_key": key, "duplicate": duplicate, "body": payload})
        return 200, {"status": "ok", "duplicate": duplicate}

    def record(self, entry: dict[str, Any]) -> None:
        if self.record_path is None:
            return
        with self.record_path.open("a") as out:
            out.write(json.dumps(entry, separators=(",", ":")) + "\n")
            out.flush()


def build_pager_app(pager: Pager, *, grafana_token: str | None = None) -> web.Application:
    """The aiohttp application around a :class:`Pager`."""

    async def webhook(request: web.Request) -> web.Response:
        body = await request.read()
        status, answer = pager.accept(body, request.headers)
        return web.json_response(answer, status=status)

    async def grafana(request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "")
        if grafana_token is None or not hmac.compare_digest(given.encode(), f"Bearer {grafana_token}".encode()):
            return web.json_response({"status": "rejected", "reason": "bearer token"}, status=401)
        body = await request.read()
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return web.json_response({"status": "rejected", "reason": "body is not JSON"}, status=400)
        logger.info("grafana notification %s: %s", payload.get("groupKey"), payload.get("status"))
        pager.record({"received_at": time.time(), "idempotency_key": None, "duplicate": False, "source": "grafana",
                       "body": payload})
        return web.json_response({"status": "ok"})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "accepted": pager.accepted, "duplicates": pager.duplicates,
                                  "rejected": pager.rejected})

    app = web.Application(client_max_size=MAX_BODY)
    app.add_routes([web.post("/webhook", webhook), web.post("/grafana", grafana), web.get("/healthz", health)])
    return app


async def serve_pager(pager: Pager, *, host: str, port: int, grafana_token: str | None = None,
                      stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (or SIGTERM/SIGINT when ``stop`` is ``None``).

    Raises
    ------
    PortInUse
        If another process listens on ``port``.
    ConfigurationError
        If ``host`` cannot be bound (does not resolve, is not this machine's).
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    runner = web.AppRunner(build_pager_app(pager, grafana_token=grafana_token), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:  # a taken port; or a --host that does not resolve or is not this machine's
        await runner.cleanup()
        raise listen_failed(exc, what="the pager", host=host, port=port,
                            setting="--port" if exc.errno == errno.EADDRINUSE else "--host") from None
    print(f"pager listening on http://{host}:{port}/webhook", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run_pager(settings: Settings, port: int, *, host: str = "127.0.0.1", secret_env: str | None = None,
              record_path: Path | None = None, tolerance_s: float = SIGNATURE_TOLERANCE_S,
              grafana_token_env: str | None = None) -> int:
    """Block serving the pager on ``host:port`` until SIGTERM or SIGINT; return 0.

    Parameters
    ----------
    settings
        The secret is ``VITALS_WEBHOOK_SECRET`` unless ``secret_env`` names another variable.
    port
        TCP port.
    secret_env
        Name of an environment variable holding the secret (the paging system is a separate
        product with its own configuration; a comma in it separates rotated secrets).
    record_path
        Append accepted requests to this JSONL file.
    tolerance_s
        Largest accepted signature age.
    grafana_token_env
        Environment variable holding the bearer token Grafana's contact point sends to
        ``/grafana``; unset disables that path.

    Raises
    ------
    ConfigurationError
        No secret, or the named variable is unset; a ``record_path`` that cannot be appended to;
        a ``host`` that cannot be bound.
    PortInUse
        Another process listens on ``port``.
    """
    if secret_env is not None:
        raw = os.environ.get(secret_env)
        if not raw:
            raise ConfigurationError(f"environment variable {secret_env} (the pager's webhook secret) is unset")
    else:
        raw = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
        if not raw:
            raise ConfigurationError("VITALS_WEBHOOK_SECRET (or --secret-env VAR) must be set for the pager")
    grafana_token = os.environ.get(grafana_token_env) if grafana_token_env else None
    pager = Pager([s.strip().encode() for s in raw.split(",") if s.strip()], record_path=record_path,
                  tolerance_s=tolerance_s)
    asyncio.run(serve_pager(pager, host=host, port=port, grafana_token=grafana_token or None))
    return 0
