"""Send device messages through the ingest gateway instead of straight to Kafka (``--via-gateway``).

:class:`GatewayProducer` offers the part of kafka-python's producer that the publishers use
(``send(...).add_errback(...)``, ``flush()``, ``close()``), so ``vitalrisk replay`` runs the same
code either way. Messages are gathered into native uploads (a JSON array, gzip-compressed when
large) and posted with the device's token; like a well-behaved device it waits ``Retry-After``
on 429 and 503 and retries a dropped connection, sending the same upload again (the gateway
accepts a retry once), until ``give_up_s`` has passed. A 401 ends the run at once (the token is
wrong or revoked); another refusal counts its messages as errors.

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
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Self

from kernel.errors import ConfigurationError, ServiceUnavailable, VitalsError

logger = logging.getLogger(__name__)

#: An upload is posted once it holds this many bytes of messages (the gateway takes 1 MiB by default).
UPLOAD_BYTES = 256 * 1024
#: Uploads larger than this are gzip-compressed.
GZIP_FROM_BYTES = 8 * 1024
#: Longest wait between two tries, seconds, whatever ``Retry-After`` says.
MAX_WAIT_S = 30.0

Post = Callable[[bytes, dict[str, str]], tuple[int, dict[str, str], bytes]]


class GatewayRefused(VitalsError):
    """The gateway refused an upload for a reason a retry cannot fix."""


class _Pending:
    """What ``send`` returns: errbacks run if the message's upload is refused."""

    def __init__(self) -> None:
        self.errbacks: list[Callable[[BaseException], object]] = []

    def add_errback(self, errback: Callable[[BaseException], object]) -> Self:
        self.errbacks.append(errback)
        return self


class GatewayProducer:
    """Post native device messages to ``url`` (the gateway's base URL) with ``token``.

    Parameters
    ----------
    url
        The gateway's base URL, e.g. ``http://127.0.0.1:8088``.
    token
        The device token from ``vitalrisk devices enroll``.
    batch_messages
        Messages per upload at most (1: each message leaves at once, for paced replays).
    give_up_s
        How long to keep retrying one upload on 429, 503 or a dropped connection.
    post
        Sends one upload; returns status, headers and body (tests replace it).
    """

    def __init__(self, url: str, token: str, *, batch_messages: int = 500, give_up_s: float = 120.0,
                 timeout_s: float = 30.0, post: Post | None = None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if batch_messages < 1:
            raise ValueError(f"batch_messages must be at least 1, got {batch_messages}")
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"--via-gateway must be an http:// or https:// URL, got {url!r}")
        self.endpoint = url.rstrip("/") + "/v1/uploads"
        self._token = token
        self.batch_messages = batch_messages
        self.give_up_s = give_up_s
        self.timeout_s = timeout_s
        self._post = post or self._urllib_post
        self._sleep, self._clock = sleep, clock
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
        body = b"[" + b",".join(values) + b"]"
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self._token}"}
        if len(body) >= GZIP_FROM_BYTES:
            body, headers["Content-Encoding"] = gzip.compress(body, compresslevel=5), "gzip"
        try:
            self._upload(body, headers)
        except GatewayRefused as exc:
            for item in pending:
                for errback in item.errbacks:
                    errback(exc)

    def close(self, timeout: float | None = None) -> None:
        self.flush()

    def _upload(self, body: bytes, headers: dict[str, str]) -> None:
        deadline = self._clock() + self.give_up_s
        while True:
            try:
                status, answer_headers, answer = self._post(body, headers)
            except OSError as exc:  # refused or dropped connection, timeout: the same upload again
                status, answer_headers, answer = 0, {"Retry-After": "1"}, str(exc).encode()
            if 200 <= status < 300:
                self.uploads += 1
                return
            if status == 401:
                raise ConfigurationError("the gateway refused the device token (401): check --token, or enrol "
                                         "the device again with `vitalrisk devices enroll`")
            if status not in (0, 429, 503):
                raise GatewayRefused(f"the gateway refused an upload with {status}: {_detail(answer)}")
            wait_s = min(MAX_WAIT_S, _retry_after(answer_headers))
            if self._clock() + wait_s > deadline:
                raise ServiceUnavailable(f"the gateway at {self.endpoint} did not accept an upload within "
                                         f"{self.give_up_s:g} s (last answer: {status or _detail(answer)})")
            self.retries += 1
            logger.debug("gateway answered %s; retrying in %.1f s", status, wait_s)
            self._sleep(wait_s)

    def _urllib_post(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")  # noqa: S310 - http(s) only, checked in __init__
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 - http(s) only, checked in __init__
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()


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
