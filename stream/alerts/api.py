"""The alerter's small HTTP API: acknowledge alerts, create silences, list alerts.

::

    POST   /alerts/{alert_id}/ack    {"by": "rn-ward-3"}                  200 {"alert_id", "acknowledged_by", "acknowledged_at"}
    POST   /silences                 {"patient_id": "pt-…", "kind": "risk_high" | null,
                                      "minutes": 30, "by": "rn-ward-3", "reason": "…"}  201 {"silence_id", "starts_at", "ends_at"}
                                     (every patient: "patient_id": null, "all_patients": true, short)
    GET    /silences                                                      200 [{silence_id, patient_id, kind, …}]
    DELETE /silences/{silence_id}    {"by": "rn-ward-3"}                  200 {"silence_id", "ended_by", "ends_at"}
    GET    /alerts?state=firing                                           200 [{alert_id, patient_id, kind, …}]
    GET    /healthz                                                       200 {"status": "ok"}

Every request names who acts (``by``); the database records when. With
``VITALS_ALERTER_API_TOKEN`` set, requests need ``Authorization: Bearer <token>``; the API will
not start on an address beyond the loopback without one, nor without TLS
(``VITALS_ALERTER_TLS_CERT_FILE`` and ``_KEY_FILE``) unless told a proxy terminates it
(:func:`check_exposure`). A request
with a body must say ``Content-Type: application/json``: a browser's cross-site form post
(``text/plain``, form encodings) is refused before it is read. Silences are bounded
(:mod:`stream.alerts.silence_rules`). Errors are JSON ``{"error": "..."}``: 400 bad input, 401
no or wrong token, 404 unknown alert or silence, 409 alert not firing or silence already ended,
415 not JSON, 503 database down or not answering within :data:`REQUEST_DEADLINE_S` (with
``Retry-After``). The handlers only write to the database; the alerter that owns
the patient applies the change at its next tick.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, UTC
from typing import Any

from aiohttp import web

from infra.serving import alerter_listener, is_loopback, prepare, server_tls, start_site
from kernel.errors import (AlertNotFiring, AlertStoreUnavailable, ConfigurationError, SilenceEnded, UnknownAlert,
                           UnknownSilence, VitalsError)
from kernel.settings import Settings
from sinks.alert_store import AlertStore
from stream.alerts.silence_rules import SilenceBounds

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def check_exposure(settings: Settings) -> None:
    """Refuse to serve the API beyond the loopback address without a bearer token, or without TLS.

    Anyone who reaches an unauthenticated API can silence every patient's pages; over plain HTTP
    the token itself can be read off the network. The TLS files are checked here too
    (:func:`infra.serving.prepare`), so a bad one is one line before the alerter starts.

    Raises
    ------
    ConfigurationError
        ``VITALS_ALERTER_HOST`` is not a loopback address and ``VITALS_ALERTER_API_TOKEN`` is unset,
        or TLS is not set and ``VITALS_ALERTER_ALLOW_PLAINTEXT`` is not true; or the TLS files are unusable.
    """
    if not settings.alerter_port:
        return
    if settings.alerter_api_token is None and not is_loopback(settings.alerter_host):
        raise ConfigurationError(
            f"the alerter API would listen on {settings.alerter_host} without a token: set "
            "VITALS_ALERTER_API_TOKEN (at least 32 characters), listen on 127.0.0.1, or set VITALS_ALERTER_PORT=0")
    prepare(alerter_listener(settings))


#: How long a request may wait for the database before it is answered 503 (the store itself
#: retries a lost database for as long as the alerter runs: a caller must not wait that long).
REQUEST_DEADLINE_S = 5.0


def build_api(store: AlertStore, *, token: str | None = None, on_change: Callable[[], None] = lambda: None,
              bounds: SilenceBounds | None = None, deadline_s: float = REQUEST_DEADLINE_S) -> web.Application:
    """The aiohttp application (tests serve it directly)."""
    limits = bounds or SilenceBounds(7 * 24 * 60, 60)
    expected = f"Bearer {token}".encode() if token is not None else None

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is not None and request.path != "/healthz":
            given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(given, expected):
                return _error(401, "missing or wrong bearer token")
        if request.method in ("POST", "DELETE") and request.content_type != "application/json":
            return _error(415, "send the body as Content-Type: application/json")
        try:
            async with asyncio.timeout(deadline_s):
                return await handler(request)
        except TimeoutError:
            logger.warning("an API request to %s waited %g s for the database: answered 503", request.path,
                           deadline_s)
            response = _error(503, f"the alert database did not answer within {deadline_s:g} s; retry")
            response.headers["Retry-After"] = str(max(1, round(deadline_s)))
            return response
        except (ValueError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _error(400, str(exc))
        except (UnknownAlert, UnknownSilence) as exc:
            return _error(404, str(exc))
        except (AlertNotFiring, SilenceEnded) as exc:
            return _error(409, str(exc))
        except AlertStoreUnavailable as exc:
            return _error(503, str(exc))

    async def body(request: web.Request) -> dict[str, Any]:
        data = await request.json()
        if not isinstance(data, dict):
            raise ValueError("the body must be a JSON object")
        return data

    async def ack(request: web.Request) -> web.Response:
        data = await body(request)
        by = data.get("by")
        if not isinstance(by, str):
            raise ValueError("'by' (who acknowledges) is required")
        alert_id = request.match_info["alert_id"]
        who, at_ms = await store.acknowledge(alert_id, by=by, via="http")
        on_change()
        logger.info("alert %s acknowledged over HTTP", alert_id)
        return web.json_response({"alert_id": alert_id, "acknowledged_by": who, "acknowledged_at": _iso(at_ms)})

    async def silence(request: web.Request) -> web.Response:
        data = await body(request)
        minutes = data.get("minutes")
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)):
            raise ValueError("'minutes' must be a number")
        patient_id, kind = data.get("patient_id"), data.get("kind")
        for name, value in (("patient_id", patient_id), ("kind", kind)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name!r} must be a non-empty string or null")
        all_patients = data.get("all_patients", False)
        if not isinstance(all_patients, bool):
            raise ValueError("'all_patients' must be true or false")
        by, reason = data.get("by"), data.get("reason")
        if not isinstance(by, str) or not isinstance(reason, str):
            raise ValueError("'by' and 'reason' are required strings")
        limits.check(patient_id=patient_id, all_patients=all_patients, minutes=float(minutes))
        created = await store.add_silence(patient_id=patient_id, kind=kind, minutes=float(minutes), by=by,
                                          reason=reason)
        on_change()
        logger.info("silence %s created over HTTP", created.silence_id)
        return web.json_response({"silence_id": created.silence_id, "patient_id": patient_id, "kind": kind,
                                  "starts_at": _iso(created.starts_ms), "ends_at": _iso(created.ends_ms)}, status=201)

    async def silences(request: web.Request) -> web.Response:
        return web.json_response([{"silence_id": s.silence_id, "patient_id": s.patient_id, "kind": s.kind,
                                   "starts_at": _iso(s.starts_ms), "ends_at": _iso(s.ends_ms), "created_by": s.created_by,
                                   "reason": s.reason} for s in await store.active_silences()])

    async def end_silence(request: web.Request) -> web.Response:
        data = await body(request)
        by = data.get("by")
        if not isinstance(by, str):
            raise ValueError("'by' (who ends the silence) is required")
        ended = await store.end_silence(request.match_info["silence_id"], by=by)
        on_change()
        logger.info("silence %s ended over HTTP", ended.silence_id)
        return web.json_response({"silence_id": ended.silence_id, "ended_by": by, "ends_at": _iso(ended.ends_ms)})

    async def alerts(request: web.Request) -> web.Response:
        state = request.query.get("state")
        if state is not None and state not in ("firing", "resolved"):
            raise ValueError("state must be 'firing' or 'resolved'")
        return web.json_response(await store.list_alerts(state=state))

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(middlewares=[guard], client_max_size=64 * 1024)
    app.add_routes([web.post("/alerts/{alert_id}/ack", ack), web.post("/silences", silence),
                    web.get("/silences", silences), web.delete("/silences/{silence_id}", end_silence),
                    web.get("/alerts", alerts), web.get("/healthz", health)])
    return app


async def start_api(store: AlertStore, settings: Settings, *, on_change: Callable[[], None]) -> web.AppRunner:
    """Serve :func:`build_api` on ``alerter_host:alerter_port``, over HTTPS when ``alerter_tls_cert_file``
    and ``alerter_tls_key_file`` are set (:mod:`infra.serving`); ``await runner.cleanup()`` stops it.

    Raises
    ------
    PortInUse
        If another process listens on the port (``vitalrisk alerter`` checks before it starts).
    """
    check_exposure(settings)  # the token, TLS beyond the loopback address, the TLS files
    listener = alerter_listener(settings)
    tls = server_tls(listener)
    token = settings.alerter_api_token.get_secret_value() if settings.alerter_api_token else None
    runner = web.AppRunner(build_api(store, token=token, on_change=on_change, bounds=SilenceBounds.from_settings(settings)),
                           access_log=None)
    await runner.setup()
    try:
        await start_site(runner, listener, tls)
    except VitalsError:
        await runner.cleanup()
        raise
    logger.info("alerter API on %s", listener.url)
    return runner
