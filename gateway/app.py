"""``vitalrisk gateway``: the HTTP API devices and vendors upload to (aiohttp), over HTTPS when
``VITALS_GATEWAY_TLS_CERT_FILE`` and ``VITALS_GATEWAY_TLS_KEY_FILE`` are set (:mod:`infra.serving`).

::

    POST /v1/uploads       native vitalrisk.device/1 (application/json: one message or an array),
                           FHIR R4 (application/fhir+json: Observation or Bundle) or
                           Open mHealth (application/vnd.openmhealth+json)
    POST /fhir/Observation a FHIR Observation, for FHIR clients whose base URL is /fhir
    POST /fhir             a FHIR Bundle (transaction, batch or collection); also at /fhir/, where
                           FHIR clients that keep a slash after the base URL post a transaction
    GET  /healthz          {"status": "ok"}
    GET  /metrics          Prometheus text
    GET  /openapi.json     this API as OpenAPI 3 (gateway/openapi.py)

Every upload needs ``Authorization: Bearer <device token>`` (``vitalrisk devices enroll``) and
is answered **202** only after the broker acknowledged its records. The body is read at most
``VITALS_GATEWAY_MAX_BODY_BYTES`` far (413 beyond, before the rest is read); a
``Content-Encoding: gzip`` body is inflated at most ``VITALS_GATEWAY_MAX_DECOMPRESSED_BYTES``
far (413 beyond: a gzip bomb costs that much memory and the CPU to inflate it, no more).
Refusals are JSON ``{"status", "reason", "detail"}``, or a FHIR ``OperationOutcome`` on the
FHIR routes and for FHIR content types; 429 and 503 carry ``Retry-After``.

The access log is off: tokens travel in a header and the query string could carry anything.
The gateway logs device ids and reasons only, never a token or a vital sign.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import signal
import zlib
from collections.abc import Awaitable, Callable
from typing import cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gateway.openapi import openapi_document
from gateway.producer import KafkaRecords
from gateway.service import Directory, Gateway, ProduceFailed, RecordSink, RetryLater, Unauthorized
from gateway.outcome import Status, refuse
from gateway.uploads import UploadRefused, parse_upload
from infra.preflight import require_database, require_free_port, require_kafka
from infra.serving import gateway_listener, prepare, start_site
from kernel.errors import ServiceUnavailable
from kernel.settings import Settings
from sinks.devices import DeviceDirectory
from sinks.metrics import GatewayMetrics

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: How often devices' last-seen times are written to the device table, seconds.
SEEN_FLUSH_S = 30.0
#: Seconds a stopping gateway gives uploads in progress to finish.
SHUTDOWN_GRACE_S = 10.0
#: Allocations between two young collections of the garbage collector in the gateway's process (CPython's: 700).
GC_YOUNG_THRESHOLD = 50_000
#: Content codings the gateway inflates.
GZIP_CODINGS = frozenset({"gzip", "x-gzip"})
FHIR_JSON = "application/fhir+json"
_FHIR_TYPES = frozenset({FHIR_JSON, "application/json+fhir"})
_FHIR_ROUTES = frozenset({"/fhir", "/fhir/Observation"})


@dataclasses.dataclass(frozen=True, slots=True)
class BodyLimits:
    """How far an upload is read, as sent and inflated, bytes."""

    max_body_bytes: int
    max_decompressed_bytes: int


def gunzip(data: bytes, max_bytes: int) -> bytes:
    """Inflate a gzip body (one or more members) to at most ``max_bytes``; 413 or 400 otherwise.

    Inflation stops as soon as the output would pass ``max_bytes``, so a bomb costs only that.

    >>> import gzip
    >>> gunzip(gzip.compress(b"abc") + gzip.compress(b"def"), 10)
    b'abcdef'
    >>> gunzip(gzip.compress(bytes(1_000_000)), 1000)
    Traceback (most recent call last):
    ...
    gateway.outcome.UploadRefused: too_large: the body inflates to more than 1000 bytes
    >>> gunzip(b"not gzip", 1000)
    Traceback (most recent call last):
    ...
    gateway.outcome.UploadRefused: bad_encoding: the body is not valid gzip (incorrect header check)
    """
    out = bytearray()
    rest = data
    try:
        while True:
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            while True:
                out += inflater.decompress(rest, max_bytes + 1 - len(out))
                if len(out) > max_bytes:
                    raise refuse(413, "too_large", f"the body inflates to more than {max_bytes} bytes")
                rest = inflater.unconsumed_tail
                if inflater.eof or not rest:
                    break
            if not inflater.eof:
                raise refuse(400, "bad_encoding", "the gzip body is truncated")
            rest = inflater.unused_data
            if not rest:
                return bytes(out)
    except zlib.error as exc:
        raise refuse(400, "bad_encoding", f"the body is not valid gzip ({str(exc).split(': ')[-1]})") from None


async def read_body(request: web.Request, limits: BodyLimits) -> bytes:
    """The upload's bytes, inflated if gzip; read no further than the limits allow."""
    coding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if coding not in GZIP_CODINGS and coding != "identity":
        raise refuse(415, "unsupported_encoding", "Content-Encoding must be gzip or identity")
    declared = request.content_length
    if declared is not None and declared > limits.max_body_bytes:
        raise refuse(413, "too_large", f"the body has {declared} bytes (limit {limits.max_body_bytes})")
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limits.max_body_bytes:
            raise refuse(413, "too_large", f"the body has more than {limits.max_body_bytes} bytes")
    if coding in GZIP_CODINGS:
        return gunzip(bytes(body), limits.max_decompressed_bytes)
    return bytes(body)


def _route(request: web.Request) -> str:
    """The route's pattern, for metrics: never the path as the client wrote it (``/fhir/`` is ``/fhir``)."""
    resource = request.match_info.route.resource
    return resource.canonical.rstrip("/") if resource is not None else "unmatched"


def _wants_fhir(request: web.Request) -> bool:
    return _route(request) in _FHIR_ROUTES or request.content_type in _FHIR_TYPES


def refusal(request: web.Request, exc: UploadRefused) -> web.Response:
    """The HTTP answer to a refusal: JSON, or an OperationOutcome for FHIR requests."""
    headers: dict[str, str] = {}
    if isinstance(exc, RetryLater):
        headers["Retry-After"] = str(exc.retry_after_s)
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="vitalrisk"' + (
            "" if exc.cause == "missing" else ', error="invalid_token"')
    if _wants_fhir(request):
        return web.json_response(exc.outcome(), status=exc.status, headers=headers, content_type=FHIR_JSON)
    return web.json_response({"status": exc.status, "reason": exc.reason, "detail": exc.detail},
                             status=exc.status, headers=headers)


def build_app(gateway: Gateway, registry: CollectorRegistry, *, body_limits: BodyLimits) -> web.Application:
    """The aiohttp application around ``gateway`` (the tests serve it directly)."""
    metrics = gateway.metrics
    # An upload body may hold many messages: the body as a whole may be as large as it may
    # inflate to; every record produced from it is held to the worker's own limits.
    upload_limits = dataclasses.replace(gateway.limits, max_message_bytes=body_limits.max_decompressed_bytes)

    @web.middleware
    async def answer(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except UploadRefused as exc:
            metrics.rejections.labels(exc.reason).inc()
            response = refusal(request, exc)
        except web.HTTPException as exc:  # aiohttp's own: 404, 405
            reason = exc.reason.lower().replace(" ", "_")
            status = cast(Status, exc.status)  # aiohttp raises 404 and 405 here
            response = refusal(request, refuse(status, reason, f"{request.method} {_route(request)}: {exc.reason}"))
            if isinstance(exc, web.HTTPMethodNotAllowed):
                response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        except Exception:  # a bug, not the client's fault: one logged traceback, a plain 500 to the client
            logger.exception("upload handling failed on %s", _route(request))
            response = refusal(request, refuse(500, "internal_error", "the gateway failed; retry later"))
        metrics.requests.labels(_route(request), str(response.status)).inc()
        return response

    async def upload(request: web.Request, content_type: str | None = None) -> web.Response:
        received_ms = gateway.wall_ms()
        credential = await gateway.authenticate(request.headers.get("Authorization"))
        gateway.admit(credential)
        body = await read_body(request, body_limits)
        parsed = parse_upload(body, content_type=content_type or request.headers.get("Content-Type") or "",
                              limits=upload_limits)
        accepted = await gateway.accept(credential, parsed, received_ms=received_ms)
        if _wants_fhir(request):
            outcome = {"resourceType": "OperationOutcome",
                       "issue": [{"severity": "information", "code": "informational",
                                  "diagnostics": f"accepted {accepted.readings} readings in {accepted.messages} "
                                                 f"messages ({accepted.duplicates} already accepted)"}]}
            return web.json_response(outcome, status=202, content_type=FHIR_JSON)
        return web.json_response(accepted.body(), status=202)

    async def uploads(request: web.Request) -> web.Response:
        return await upload(request)

    async def fhir(request: web.Request) -> web.Response:
        # FHIR clients send application/fhir+json, some plain application/json: both are FHIR here.
        kind = request.content_type
        return await upload(request, FHIR_JSON if kind in ("application/json", *_FHIR_TYPES) else kind)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def prometheus(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    document = openapi_document(body_limits.max_body_bytes)

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(document)

    app = web.Application(middlewares=[answer], client_max_size=body_limits.max_body_bytes)
    app.add_routes([web.post("/v1/uploads", uploads), web.post("/fhir/Observation", fhir), web.post("/fhir", fhir),
                    web.post("/fhir/", fhir),
                    web.get("/healthz", health, allow_head=False), web.get("/metrics", prometheus, allow_head=False),
                    web.get("/openapi.json", openapi, allow_head=False)])
    return app


class MalformedRequests(logging.Filter):
    """aiohttp logs a request it cannot parse (a NUL in a header, a bad request line) as an error with
    a traceback; for a public endpoint that is a client's mistake, one warning line without the request."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args, record.exc_info, record.exc_text = (
                "refused a malformed HTTP request (%s)", (exc.code,), None, None)
        return True


def make_runner(app: web.Application) -> web.AppRunner:
    """An AppRunner that leaves ``Content-Encoding`` to :func:`read_body` (bounded) and logs no requests."""
    return web.AppRunner(app, access_log=None, auto_decompress=False, shutdown_timeout=SHUTDOWN_GRACE_S)


async def _flush_seen_forever(gateway: Gateway) -> None:
    while True:
        await asyncio.sleep(SEEN_FLUSH_S)
        await gateway.flush_seen()


async def serve(settings: Settings, *, directory: Directory | None = None, sink: RecordSink | None = None,
                registry: CollectorRegistry | None = None, stop: asyncio.Event | None = None) -> None:
    """Serve the gateway on ``gateway_host:gateway_port`` until ``stop`` is set: HTTPS when
    ``gateway_tls_cert_file`` and ``gateway_tls_key_file`` are set (:mod:`infra.serving`).

    The device table and the producer are opened here unless given (tests hand in fakes).

    Raises
    ------
    PortInUse, ConfigurationError
        The address cannot be bound; the TLS files are unusable; plain HTTP beyond the loopback
        address without ``gateway_allow_plaintext``.
    ServiceUnavailable
        The producer could not start.
    """
    listener = gateway_listener(settings)
    tls = prepare(listener)
    registry = registry or CollectorRegistry()
    stop = stop or asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        if directory is None:
            directory = await stack.enter_async_context(DeviceDirectory(settings.gateway_database_url))
        if sink is None:
            try:
                sink = await stack.enter_async_context(KafkaRecords(settings))
            except ProduceFailed as exc:
                raise ServiceUnavailable(f"Kafka at {settings.kafka_bootstrap}: {exc}") from None
        gateway = Gateway.from_settings(settings, directory=directory, sink=sink, metrics=GatewayMetrics(registry))
        limits = BodyLimits(settings.gateway_max_body_bytes, settings.gateway_max_decompressed_bytes)
        runner = make_runner(build_app(gateway, registry, body_limits=limits))
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await start_site(runner, listener, tls)
        logger.info("gateway on %s (readings to %s)", listener.url, settings.readings_topic)
        flusher = asyncio.create_task(_flush_seen_forever(gateway))
        try:
            await stop.wait()
            logger.info("gateway stopping")
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await runner.cleanup()  # stop accepting, let uploads in progress finish
            await gateway.flush_seen()


def tune_garbage_collector() -> None:
    """Collect cycles less often in the gateway's process, and never look at what it imported.

    An upload allocates thousands of short-lived containers (readings, futures, callbacks), so
    at CPython's threshold of 700 a young collection ran every few messages; and the ~90,000
    objects of the imports (FHIR models, aiohttp, aiokafka) were walked again by every full one,
    a pause of milliseconds in some upload's latency. Frozen, they are never walked.
    """
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def run_gateway(settings: Settings) -> int:
    """Block serving the gateway until SIGTERM or SIGINT; return its exit status.

    Raises
    ------
    PortInUse
        The gateway's port is taken.
    ConfigurationError
        The TLS files are unusable, or plain HTTP would be served beyond the loopback address.
    ServiceUnavailable
        Kafka, or the device table's database, does not answer.
    """
    prepare(gateway_listener(settings))  # before anything slower: a bad certificate is one line at once
    require_free_port(settings.gateway_host, settings.gateway_port, what="the gateway", setting="VITALS_GATEWAY_PORT")
    require_kafka(settings)
    require_database(settings.gateway_database_url, setting="VITALS_GATEWAY_DATABASE_URL")

    logging.getLogger("aiohttp.server").addFilter(MalformedRequests())
    tune_garbage_collector()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(settings, stop=stop)

    asyncio.run(main())
    return 0
