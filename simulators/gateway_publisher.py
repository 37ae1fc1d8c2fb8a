"""Send device messages through the ingest gateway instead of straight to Kafka (``--via-gateway``).

Two senders share one uploader, :class:`DeviceUploads`: it posts native uploads (a JSON array,
gzip-compressed when large) with a device's token and, like a well-behaved device, waits
``Retry-After`` on 429 and 503 and retries a dropped connection, sending the same upload again
(the gateway accepts a retry once), until ``give_up_s`` has passed. A 401 ends the run at once
(the token is wrong or revoked); another refusal counts its messages as errors.

- :class:`GatewayProducer`, one device's (``vitalrisk replay --via-gateway URL --token T``),
  offers the part of kafka-python's producer that the publishers use (``send(...).add_errback(...)``,
  ``flush()``, ``close()``), so ``vitalrisk replay`` runs the same code either way.
- :class:`GatewaySender`, a simulated cohort's (``vitalrisk simulate --rate R --via-gateway URL
  --tokens FILE``), is the load generator's :class:`~simulators.load.Sender`: every patient's
  device uploads its own messages with its own token from the tokens file
  (:func:`gateway.enrolment.read_tokens`), a few devices at a time on worker threads.

Examples
--------
>>> calls = []
>>> def post(body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
...     calls.append(len(body))
...     return (503, {"Retry-After": "1"}, b"{}") if len(calls) == 1 else (202, {}, b"{}")
>>> producer = GatewayProducer("http://gw", "vrd1.x", post=post, sleep=lambda s: None)
>>> errors = []
>>> _ = producer.send("vitals.readings", key=b"pt-1", value=b'{"seq": 1}').add_errback(errors.append)
>>> producer.flush()
>>> len(calls), errors, producer.uploads
(2, [], 1)
"""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Self

from gateway.enrolment import DeviceToken
from kernel.errors import ConfigurationError, ServiceUnavailable, VitalsError

logger = logging.getLogger(__name__)

#: An upload is posted once it holds this many bytes of messages (the gateway takes 1 MiB by default).
UPLOAD_BYTES = 256 * 1024
#: Uploads larger than this are gzip-compressed.
GZIP_FROM_BYTES = 8 * 1024
#: Longest wait between two tries, seconds, whatever ``Retry-After`` says.
MAX_WAIT_S = 30.0
#: Uploads :class:`GatewaySender` has on their way at once (threads; the gateway serves them concurrently).
WORKERS = 32
#: Messages :class:`GatewaySender` may have queued or on their way before ``send`` blocks.
MAX_IN_FLIGHT_MESSAGES = 4096

Post = Callable[[bytes, dict[str, str]], tuple[int, dict[str, str], bytes]]


def client_tls(ca_file: Path | None) -> ssl.SSLContext:
    """The TLS context an uploader verifies the gateway with: ``ca_file``'s CAs (or the system's), host name checked.

    Raises
    ------
    ConfigurationError
        ``ca_file`` cannot be read or holds no PEM certificate.
    """
    try:
        return ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"VITALS_GATEWAY_CA_FILE={ca_file} is not a readable PEM file of CA certificates "
                                 f"({getattr(exc, 'strerror', None) or exc})") from None


class GatewayRefused(VitalsError):
    """The gateway refused an upload for a reason a retry cannot fix."""


class _Pending:
    """What ``send`` returns: errbacks run if the message's upload is refused."""

    def __init__(self) -> None:
        self.errbacks: list[Callable[[BaseException], object]] = []

    def add_errback(self, errback: Callable[[BaseException], object]) -> Self:
        self.errbacks.append(errback)
        return self


class DeviceUploads:
    """Post native uploads to the gateway at ``url``, retrying as a device does; thread-safe.

    Parameters
    ----------
    url
        The gateway's base URL, e.g. ``http://127.0.0.1:8088``.
    give_up_s
        How long to keep retrying one upload on 429, 503 or a dropped connection.
    timeout_s
        Seconds one request may take.
    post
        Sends one upload; returns status, headers and body (tests replace it).
    sleep, clock
        Waits between tries, and the monotonic clock of ``give_up_s``.
    ca_file
        For an ``https://`` URL: the PEM CA(s) the gateway's certificate must chain to
        (``VITALS_GATEWAY_CA_FILE``); ``None``: the system's. The host name is always checked.
    """

    def __init__(self, url: str, *, give_up_s: float = 120.0, timeout_s: float = 30.0, post: Post | None = None,
                 sleep: Callable[[float], object] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 keep_alive: bool = False, ca_file: Path | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"--via-gateway must be an http:// or https:// URL, got {url!r}")
        self._tls = client_tls(ca_file) if url.startswith("https://") else None
        self.endpoint = url.rstrip("/") + "/v1/uploads"
        self.give_up_s = give_up_s
        self.timeout_s = timeout_s
        self._path = urllib.parse.urlsplit(self.endpoint).path
        self._connections = threading.local()
        self._opened: list[http.client.HTTPConnection] = []
        self._post = post or (self._keep_alive_post if keep_alive else self._urllib_post)
        self._sleep, self._clock = sleep, clock

    def __repr__(self) -> str:
        return f"DeviceUploads({self.endpoint!r})"

    def close(self) -> None:
        """Close the persistent connections (once no upload is on its way)."""
        opened, self._opened = self._opened, []
        for connection in opened:
            connection.close()

    def upload(self, values: Sequence[bytes], token: str) -> int:
        """Post ``values`` (encoded device messages) as one upload with ``token``; return the retries it took.

        Raises
        ------
        ConfigurationError
            The gateway refused the token (401), or its certificate does not verify.
        GatewayRefused
            The gateway refused the upload for another reason (its messages are not stored).
        ServiceUnavailable
            The gateway did not accept it within ``give_up_s``.
        """
        body = b"[" + b",".join(values) + b"]"
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        if len(body) >= GZIP_FROM_BYTES:
            body, headers["Content-Encoding"] = gzip.compress(body, compresslevel=5), "gzip"
        deadline = self._clock() + self.give_up_s
        retries = 0
        while True:
            try:
                status, answer_headers, answer = self._post(body, headers)
            except OSError as exc:  # refused or dropped connection, timeout: the same upload again
                cause = getattr(exc, "reason", exc)  # urllib wraps the TLS error
                if isinstance(cause, ssl.SSLCertVerificationError):  # no retry makes it verify
                    raise ConfigurationError(f"the gateway at {self.endpoint} presented a certificate that does not "
                                             f"verify ({cause.verify_message}): set VITALS_GATEWAY_CA_FILE to the "
                                             "CA that issued it") from None
                status, answer_headers, answer = 0, {"Retry-After": "1"}, str(exc).encode()
            if 200 <= status < 300:
                return retries
            if status == 401:
                raise ConfigurationError("the gateway refused the device token (401): check --token, or enrol "
                                         "the device again with `vitalrisk devices enroll`")
            if status not in (0, 429, 503):
                raise GatewayRefused(f"the gateway refused an upload with {status}: {_detail(answer)}")
            wait_s = min(MAX_WAIT_S, _retry_after(answer_headers))
            if self._clock() + wait_s > deadline:
                raise ServiceUnavailable(f"the gateway at {self.endpoint} did not accept an upload within "
                                         f"{self.give_up_s:g} s (last answer: {status or _detail(answer)})")
            retries += 1
            logger.debug("gateway answered %s; retrying in %.1f s", status, wait_s)
            self._sleep(wait_s)

    def _keep_alive_post(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """One request on this thread's persistent connection; a failure is an ``OSError`` for
        :meth:`upload` to retry, but a connection the gateway closed while idle is replaced at once."""
        reused = getattr(self._connections, "current", None) is not None
        try:
            try:
                return self._request(body, headers)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                if not reused:
                    raise
                return self._request(body, headers)
        except http.client.HTTPException as exc:  # a reply that is not HTTP: as a dropped connection
            raise OSError(f"the gateway's answer is not HTTP: {exc}") from None

    def _request(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        connection: http.client.HTTPConnection | None = getattr(self._connections, "current", None)
        if connection is None:
            parts = urllib.parse.urlsplit(self.endpoint)
            connection = self._connections.current = (
                http.client.HTTPSConnection(parts.netloc, timeout=self.timeout_s, context=self._tls)
                if self._tls is not None else http.client.HTTPConnection(parts.netloc, timeout=self.timeout_s))
            self._opened.append(connection)  # list.append is atomic: the threads share the list
        try:
            connection.request("POST", self._path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, dict(response.headers), response.read()
        except (OSError, http.client.HTTPException):
            connection.close()
            self._connections.current = None
            raise

    def _urllib_post(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")  # noqa: S310 - http(s) only, checked in __init__
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s, context=self._tls) as response:  # noqa: S310 - http(s) only, checked in __init__
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()


class GatewayProducer:
    """Post one device's native messages to ``url`` (the gateway's base URL) with ``token``.

    Parameters
    ----------
    url
        The gateway's base URL, e.g. ``http://127.0.0.1:8088``.
    token
        The device token from ``vitalrisk devices enroll``.
    batch_messages
        Messages per upload at most (1: each message leaves at once, for paced replays).
    give_up_s, timeout_s, post, sleep, clock, ca_file
        As :class:`DeviceUploads` takes them.
    """

    def __init__(self, url: str, token: str, *, batch_messages: int = 500, give_up_s: float = 120.0,
                 timeout_s: float = 30.0, post: Post | None = None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, ca_file: Path | None = None) -> None:
        if batch_messages < 1:
            raise ValueError(f"batch_messages must be at least 1, got {batch_messages}")
        self._uploads = DeviceUploads(url, give_up_s=give_up_s, timeout_s=timeout_s, post=post, sleep=sleep,
                                      clock=clock, ca_file=ca_file)
        self.endpoint = self._uploads.endpoint
        self._token = token
        self.batch_messages = batch_messages
        self._values: list[bytes] = []
        self._pending: list[_Pending] = []
        self._bytes = 0
        self.uploads = 0
        self.retries = 0

    def __repr__(self) -> str:  # never the token
        return f"GatewayProducer({self.endpoint!r})"

    def send(self, topic: str, *, key: bytes, value: bytes, timestamp_ms: int | None = None) -> _Pending:
        """Queue one ``vitalrisk.device/1`` message (``topic``, ``key`` and time are the gateway's to set)."""
        pending = _Pending()
        self._values.append(value)
        self._pending.append(pending)
        self._bytes += len(value) + 1
        if len(self._values) >= self.batch_messages or self._bytes >= UPLOAD_BYTES:
            self.flush()
        return pending

    def flush(self, timeout: float | None = None) -> None:
        """Post what is queued and return once the gateway accepted it or refused it."""
        if not self._values:
            return
        values, pending = self._values, self._pending
        self._values, self._pending, self._bytes = [], [], 0
        try:
            self.retries += self._uploads.upload(values, self._token)
            self.uploads += 1
        except GatewayRefused as exc:
            for item in pending:
                for errback in item.errbacks:
                    errback(exc)

    def close(self, timeout: float | None = None) -> None:
        self.flush()


class _Stopped(Exception):
    """Raised in a worker thread's wait between tries when the sender closes."""


class GatewaySender:
    """The load generator's :class:`~simulators.load.Sender` through the gateway, one token per device.

    Each patient's device posts its own messages with its own token (``tokens``, keyed like the
    records, by patient id). A device has at most one upload on its way: the messages it makes
    meanwhile (while an upload waits on the gateway, or on ``Retry-After`` after a 429 or 503)
    are queued and go as the device's next upload, up to ``batch_messages`` at once, so each
    device's messages reach the topic in order and a slow gateway gets fewer, larger uploads, as
    from real devices. Uploads run on ``workers`` threads; :meth:`send` blocks while
    ``max_in_flight`` messages are queued or on their way (``wait_s``: the gateway's share of a
    run that falls short of its target).

    Acknowledged messages are those the gateway answered 202 (stored; a retry's duplicate too).
    A refusal (403, 413, 422, ...) or giving up after ``give_up_s`` counts the upload's messages
    as errors; a 401 ends the run at the next :meth:`send` or :meth:`flush`. Use as ``with``:
    closing stops the threads (what is still queued is not sent).

    Examples
    --------
    >>> posted = []
    >>> def post(body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    ...     posted.append((headers["Authorization"], body))
    ...     return 202, {}, b"{}"
    >>> with GatewaySender("http://gw", {b"pt-1": "vrd1.a", b"pt-2": "vrd1.b"}, post=post) as sender:
    ...     for seq in range(3):
    ...         sender.send(b"pt-1", b'{"seq": %d}' % seq, 15)
    ...     sender.send(b"pt-2", b'{"seq": 0}', 14)
    ...     sender.flush(5.0)
    ...     sender.acked_messages, sender.acked_readings, sender.errors
    (4, 59, 0)
    >>> sorted({auth for auth, _ in posted})
    ['Bearer vrd1.a', 'Bearer vrd1.b']
    """

    def __init__(self, url: str, tokens: Mapping[bytes, str], *, workers: int = WORKERS,
                 batch_messages: int = 100, max_in_flight: int = MAX_IN_FLIGHT_MESSAGES, give_up_s: float = 120.0,
                 timeout_s: float = 30.0, post: Post | None = None,
                 clock: Callable[[], float] = time.perf_counter, ca_file: Path | None = None) -> None:
        for name, value in (("workers", workers), ("batch_messages", batch_messages),
                            ("max_in_flight", max_in_flight)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        self._stop = threading.Event()
        self._uploads = DeviceUploads(url, give_up_s=give_up_s, timeout_s=timeout_s, post=post, sleep=self._wait,
                                      keep_alive=True, ca_file=ca_file)
        self.endpoint = self._uploads.endpoint
        self._tokens = dict(tokens)
        self.batch_messages = batch_messages
        self.max_in_flight = max_in_flight
        self._clock = clock
        self._lock = threading.Condition()
        self._queued: dict[bytes, list[tuple[bytes, int]]] = {}
        self._busy: set[bytes] = set()  # devices with an upload on its way
        self._in_flight = 0  # messages queued or on their way
        self._acked_messages = 0
        self._acked_readings = 0
        self._errors = 0
        self._fatal: ConfigurationError | None = None
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gateway-upload")
        self.wait_s = 0.0
        self.uploads = 0
        self.retries = 0

    def __repr__(self) -> str:  # never a token
        return f"GatewaySender({self.endpoint!r}, {len(self._tokens)} devices)"

    def __enter__(self) -> GatewaySender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def acked_messages(self) -> int:
        """Messages the gateway accepted."""
        return self._acked_messages

    @property
    def acked_readings(self) -> int:
        """Readings in the accepted messages."""
        return self._acked_readings

    @property
    def errors(self) -> int:
        """Messages refused, given up on, or dropped by a 401 or by closing."""
        return self._errors

    @property
    def in_flight(self) -> int:
        """Messages queued or on their way."""
        return self._in_flight

    def send(self, key: bytes, value: bytes, readings: int) -> None:
        """Queue one message of ``key``'s device; block first while ``max_in_flight`` are on their way.

        Raises
        ------
        ConfigurationError
            ``key`` has no token, or the gateway refused a token (401).
        """
        token = self._tokens.get(key)
        if token is None:
            raise ConfigurationError(f"no device token for patient {key.decode(errors='replace')}")
        with self._lock:
            if self._in_flight >= self.max_in_flight and self._fatal is None:
                started = self._clock()
                while self._in_flight >= self.max_in_flight and self._fatal is None:
                    self._lock.wait()
                self.wait_s += self._clock() - started
            if self._fatal is not None:
                raise self._fatal
            self._in_flight += 1
            if key in self._busy:
                self._queued.setdefault(key, []).append((value, readings))
                return
            self._busy.add(key)
        self._pool.submit(self._device_uploads, key, token, [(value, readings)])

    def flush(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for every message to be accepted or refused.

        Raises
        ------
        ConfigurationError
            The gateway refused a token (401).
        ServiceUnavailable
            Messages are still on their way after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._in_flight and self._fatal is None and (left := deadline - time.monotonic()) > 0:
                self._lock.wait(left)
            if self._fatal is not None:
                raise self._fatal
            if self._in_flight:
                raise ServiceUnavailable(f"{self._in_flight:,} messages not accepted by the gateway at "
                                         f"{self.endpoint} within {timeout_s:g} s")

    def close(self) -> None:
        """Stop the worker threads: an upload waiting to retry gives up, what is queued is not sent."""
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._uploads.close()

    def _wait(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _Stopped

    def _device_uploads(self, key: bytes, token: str, batch: list[tuple[bytes, int]]) -> None:
        """Post ``key``'s messages, then those queued meanwhile, until none is left (on a worker thread)."""
        while batch:
            retries, accepted = 0, False
            if self._fatal is None and not self._stop.is_set():
                try:
                    retries = self._uploads.upload([value for value, _ in batch], token)
                    accepted = True
                except ConfigurationError:  # 401: the token is stale or revoked
                    with self._lock:
                        self._fatal = ConfigurationError(
                            f"the gateway refused the token of patient {key.decode(errors='replace')}'s device (401): "
                            "the tokens file is not this database's, or the device was revoked; enrol the cohort "
                            "again (`vitalrisk devices enroll --cohort N --seed S --out FILE`)")
                except (GatewayRefused, ServiceUnavailable) as exc:
                    self._refused(exc)
                except _Stopped:
                    pass
                except Exception:  # noqa: BLE001 - a bug must cost the upload, never hang flush()
                    logger.exception("uploading %d messages failed", len(batch))
            with self._lock:
                self.uploads += int(accepted)
                self.retries += retries
                if accepted:
                    self._acked_messages += len(batch)
                    self._acked_readings += sum(readings for _, readings in batch)
                else:
                    self._errors += len(batch)
                self._in_flight -= len(batch)
                queued = self._queued.pop(key, [])
                batch, rest = queued[:self.batch_messages], queued[self.batch_messages:]
                if rest:
                    self._queued[key] = rest
                if not batch:
                    self._busy.discard(key)
                self._lock.notify_all()

    def _refused(self, exc: GatewayRefused | ServiceUnavailable) -> None:
        with self._lock:
            first = self._errors == 0
        if first:  # the rest are usually the same failure: counted, not logged
            logger.warning("%s", exc)


def tokens_for(devices: Sequence[tuple[str, str]], tokens: Sequence[DeviceToken], *, source: str) -> dict[bytes, str]:
    """Each ``(device_id, patient_id)`` of ``devices``' token from ``tokens``, keyed by patient id as the records are.

    Raises
    ------
    ConfigurationError
        A device has no token in ``tokens`` (read from ``source``), or the token there is another
        device's.

    Examples
    --------
    >>> tokens = [DeviceToken("dev-1", "pt-1", "vrd1.a")]
    >>> tokens_for([("dev-1", "pt-1")], tokens, source="t.jsonl")
    {b'pt-1': 'vrd1.a'}
    >>> tokens_for([("dev-1", "pt-1"), ("dev-2", "pt-2")], tokens, source="t.jsonl")
    Traceback (most recent call last):
    ...
    kernel.errors.ConfigurationError: t.jsonl has no token for device dev-2 of patient pt-2: enrol the devices the run simulates with `vitalrisk devices enroll --cohort 2 --seed SEED --out FILE` (the run's --patients and --seed)
    """
    by_patient = {item.patient_id: item for item in tokens}
    for device, patient in devices:
        item = by_patient.get(patient)
        if item is None:
            raise ConfigurationError(
                f"{source} has no token for device {device} of patient {patient}: enrol the devices the run "
                f"simulates with `vitalrisk devices enroll --cohort {len(devices)} --seed SEED --out FILE` "
                "(the run's --patients and --seed)")
        if item.device_id != device:
            raise ConfigurationError(f"{source} binds patient {patient} to device {item.device_id}, but the run "
                                     f"sends from {device}: enrol with the run's --patients and --seed")
    return {patient.encode(): by_patient[patient].token for _, patient in devices}


def _retry_after(headers: dict[str, str]) -> float:
    """Seconds from a ``Retry-After`` header (1 when absent or unreadable).

    >>> _retry_after({"Retry-After": "3"}), _retry_after({}), _retry_after({"Retry-After": "soon"})
    (3.0, 1.0, 1.0)
    """
    try:
        return max(0.0, float(headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0


def _detail(answer: bytes) -> str:
    """The reason and detail of a refusal's JSON, or the start of the body.

    >>> _detail(b'{"status": 403, "reason": "patient_mismatch", "detail": "message 0: ..."}')
    'patient_mismatch: message 0: ...'
    """
    try:
        body = json.loads(answer)
        return f"{body['reason']}: {body['detail']}"
    except (ValueError, KeyError, TypeError):
        return answer[:200].decode("utf-8", "replace")
