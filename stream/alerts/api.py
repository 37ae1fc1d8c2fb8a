"""The alerter's small HTTP API: acknowledge alerts, create silences, list alerts.

::

    POST /alerts/{alert_id}/ack   {"by": "rn-ward-3"}                    200 {"alert_id", "acknowledged_by", "acknowledged_at"}
    POST /silences                {"patient_id": "pt-…" | null, "kind": "risk_high" | null,
                                   "minutes": 30, "by": "rn-ward-3", "reason": "…"}   201 {"silence_id", "starts_at", "ends_at"}
    GET  /alerts?state=firing                                            200 [{alert_id, patient_id, kind, …}]
    GET  /healthz                                                        200 {"status": "ok"}

Every request names who acts (``by``); the database records when. With
``VITALS_ALERTER_API_TOKEN`` set, requests need ``Authorization: Bearer <token>``. Errors are
JSON ``{"error": "..."}``: 400 bad input, 401 no or wrong token, 404 unknown alert, 409 alert
not firing, 503 database down. The handlers only write to the database; the alerter that owns
the patient applies the acknowledgement at its next tick.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, UTC
from typing import Any

from aiohttp import web

from kernel.errors import AlertNotFiring, AlertStoreUnavailable, UnknownAlert, listen_failed
from sinks.alert_store import AlertStore
from kernel.settings import Settings

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def build_api(store: AlertStore, *, token: str | None = None, on_change: Callable[[], None] = lambda: None
              ) -> web.Application:
    """The aiohttp application (tests serve it directly)."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token is not None and request.path != "/healthz":
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return _error(401, "missing or wrong bearer token")
        try:
            return await handler(request)
        except (ValueError, json.JSONDecodeError) as exc:
            return _error(400, str(exc))
        except UnknownAlert as exc:
            return _error(404, str(exc))
        except AlertNotFiring as exc:
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
        by, reason = data.get("by"), data.get("reason")
        if not isinstance(by, str) or not isinstance(reason, str):
            raise ValueError("'by' and 'reason' are required strings")
        created = await store.add_silence(patient_id=patient_id, kind=kind, minutes=float(minutes), by=by,
                                          reason=reason)
        on_change()
        logger.info("silence %s created over HTTP", created.silence_id)
        return web.json_response({"silence_id": created.silence_id, "patient_id": patient_id, "kind": kind,
                                  "starts_at": _iso(created.starts_ms), "ends_at": _iso(created.ends_ms)}, status=201)

    async def alerts(request: web.Request) -> web.Response:
        state = request.query.get("state")
        if state is not None and state not in ("firing", "resolved"):
            raise ValueError("state must be 'firing' or 'resolved'")
        return web.json_response(await store.list_alerts(state=state))

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(middlewares=[guard], client_max_size=64 * 1024)
    app.add_routes([web.post("/alerts/{alert_id}/ack", ack), web.post("/silences", silence),
                    web.get("/alerts", alerts), web.get("/healthz", health)])
    return app


async def start_api(store: AlertStore, settings: Settings, *, on_change: Callable[[], None]) -> web.AppRunner:
    """Serve :func:`build_api` on ``alerter_host:alerter_port``; ``await runner.cleanup()`` stops it.

    Raises
    ------
    PortInUse
        If another process listens on the port (``vitalrisk alerter`` checks before it starts).
    """
    token = settings.alerter_api_token.get_secret_value() if settings.alerter_api_token else None
    runner = web.AppRunner(build_api(store, token=token, on_change=on_change), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.alerter_host, settings.alerter_port).start()
    except OSError as exc:
        await runner.cleanup()
        raise listen_failed(exc, what="the alerter API", host=settings.alerter_host, port=settings.alerter_port,
                            setting="VITALS_ALERTER_PORT") from None
    return runner
