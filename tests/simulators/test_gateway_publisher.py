"""The gateway uploader of ``vitalrisk replay --via-gateway``: batches, retries like a device, gives up in time."""

from __future__ import annotations

import gzip
import json

import pytest

from kernel.errors import ConfigurationError, ServiceUnavailable
from simulators.gateway_publisher import UPLOAD_BYTES, GatewayProducer


class FakeGateway:
    def __init__(self, *answers: tuple[int, dict[str, str]]) -> None:
        self.answers = list(answers)
        self.uploads: list[list[object]] = []
        self.now = 0.0

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        assert headers["Authorization"] == "Bearer vrd1.t"
        if headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.uploads.append(json.loads(body))
        status, answer_headers = self.answers.pop(0) if self.answers else (202, {})
        return status, answer_headers, json.dumps({"reason": "r", "detail": "d"}).encode()

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def producer(gateway: FakeGateway, **options: object) -> GatewayProducer:
    return GatewayProducer("http://gw:8088/", "vrd1.t", post=gateway.post, sleep=gateway.sleep,
                           clock=lambda: gateway.now, **options)


def test_messages_are_batched_by_count_and_by_size() -> None:
    gateway = FakeGateway()
    p = producer(gateway, batch_messages=3)
    for seq in range(7):
        p.send("t", key=b"pt-1", value=json.dumps({"seq": seq}).encode())
    p.flush()
    assert [len(u) for u in gateway.uploads] == [3, 3, 1]
    big = b'{"pad": "' + b"x" * (UPLOAD_BYTES // 2) + b'"}'
    p = producer(gateway)
    for _ in range(3):
        p.send("t", key=b"pt-1", value=big)
    assert len(gateway.uploads) == 4  # the second big message filled an upload (sent gzip-compressed)


def test_503_429_and_dropped_connections_are_retried_with_the_same_upload() -> None:
    gateway = FakeGateway((503, {"Retry-After": "5"}), (429, {"Retry-After": "2"}))
    p = producer(gateway)
    errors: list[BaseException] = []
    p.send("t", key=b"pt-1", value=b'{"seq": 1}').add_errback(errors.append)
    p.flush()
    assert gateway.uploads == [[{"seq": 1}]] * 3 and gateway.now == 7 and errors == [] and p.retries == 2


def test_a_refusal_counts_its_messages_as_errors_and_401_ends_the_run() -> None:
    gateway = FakeGateway((422, {}), (401, {}))
    p = producer(gateway)
    errors: list[BaseException] = []
    for seq in (1, 2):
        p.send("t", key=b"pt-1", value=json.dumps({"seq": seq}).encode()).add_errback(errors.append)
    p.flush()
    assert len(errors) == 2 and "422" in str(errors[0])
    p.send("t", key=b"pt-1", value=b'{"seq": 3}')
    with pytest.raises(ConfigurationError, match="refused the device token"):
        p.flush()


def test_it_gives_up_after_give_up_s() -> None:
    gateway = FakeGateway(*[(503, {"Retry-After": "10"})] * 100)
    p = producer(gateway, give_up_s=35.0)
    p.send("t", key=b"pt-1", value=b"{}")
    with pytest.raises(ServiceUnavailable, match="within 35 s"):
        p.flush()
    assert gateway.now <= 35


def test_only_http_urls_and_the_token_never_in_repr() -> None:
    with pytest.raises(ConfigurationError):
        GatewayProducer("file:///etc/passwd", "vrd1.t")
    assert "vrd1.t" not in repr(GatewayProducer("http://gw", "vrd1.t"))
