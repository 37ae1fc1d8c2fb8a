"""The gateway uploaders: ``vitalrisk replay --via-gateway``'s one device, and the load generator's
cohort with a token per device; batches, retries like a device, gives up in time."""

from __future__ import annotations

import gzip
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gateway.enrolment import DeviceToken, create_tokens_file, read_tokens, write_tokens
from kernel.errors import ConfigurationError, ServiceUnavailable
from simulators.gateway_publisher import UPLOAD_BYTES, DeviceUploads, GatewayProducer, GatewaySender, tokens_for


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


# -- the load generator's sender: one token per device ------------------------------------------


class Devices:
    """A fake gateway for :class:`GatewaySender`: answers by token, can hold uploads until released."""

    def __init__(self, answers: dict[str, list[tuple[int, dict[str, str]]]] | None = None) -> None:
        self.answers = answers or {}
        self.uploads: list[tuple[str, list[int]]] = []  # (token, the seqs of the upload)
        self.release = threading.Event()
        self.release.set()
        self.lock = threading.Lock()

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        token = headers["Authorization"].removeprefix("Bearer ")
        self.release.wait(10)
        with self.lock:
            self.uploads.append((token, [m["seq"] for m in json.loads(body)]))
            queue = self.answers.get(token, [])
            status, answer_headers = queue.pop(0) if queue else (202, {})
        return status, answer_headers, json.dumps({"reason": "r", "detail": "d"}).encode()

    def seqs(self, token: str) -> list[list[int]]:
        return [seqs for t, seqs in self.uploads if t == token]


TOKENS = {b"pt-1": "vrd1.one", b"pt-2": "vrd1.two"}


def message(seq: int) -> bytes:
    return json.dumps({"seq": seq}).encode()


def test_each_device_uploads_its_own_messages_in_order_and_what_queues_meanwhile_goes_next() -> None:
    gateway = Devices()
    gateway.release.clear()  # the first uploads wait on the gateway
    with GatewaySender("http://gw", TOKENS, post=gateway.post, workers=4) as sender:
        for seq in range(5):
            sender.send(b"pt-1", message(seq), 10)
        sender.send(b"pt-2", message(0), 7)
        gateway.release.set()
        sender.flush(5.0)
        assert (sender.acked_messages, sender.acked_readings, sender.errors, sender.in_flight) == (6, 57, 0, 0)
    assert gateway.seqs("vrd1.one") == [[0], [1, 2, 3, 4]]  # one upload on its way, the rest batched after it
    assert gateway.seqs("vrd1.two") == [[0]]
    assert sender.uploads == 3


def test_a_busy_device_sends_at_most_batch_messages_an_upload() -> None:
    gateway = Devices()
    gateway.release.clear()
    with GatewaySender("http://gw", TOKENS, post=gateway.post, batch_messages=2) as sender:
        for seq in range(6):
            sender.send(b"pt-1", message(seq), 1)
        gateway.release.set()
        sender.flush(5.0)
    assert gateway.seqs("vrd1.one") == [[0], [1, 2], [3, 4], [5]]


def test_429_and_503_are_retried_refusals_are_errors_and_401_ends_the_run() -> None:
    gateway = Devices({"vrd1.one": [(429, {"Retry-After": "0"}), (503, {"Retry-After": "0"})],
                       "vrd1.two": [(422, {})]})
    with GatewaySender("http://gw", TOKENS, post=gateway.post) as sender:
        sender.send(b"pt-1", message(0), 10)
        sender.send(b"pt-2", message(0), 10)
        sender.flush(5.0)
        assert (sender.acked_messages, sender.errors, sender.retries) == (1, 1, 2)
    gateway = Devices({"vrd1.one": [(401, {})]})
    with GatewaySender("http://gw", TOKENS, post=gateway.post) as sender:
        sender.send(b"pt-1", message(0), 10)
        with pytest.raises(ConfigurationError, match=r"refused the token of patient pt-1's device \(401\)") as caught:
            sender.flush(5.0)
        assert "vrd1" not in str(caught.value)
        with pytest.raises(ConfigurationError):
            sender.send(b"pt-2", message(0), 10)
        with pytest.raises(ConfigurationError, match="no device token for patient pt-9"):
            GatewaySender("http://gw", TOKENS).send(b"pt-9", message(0), 1)


def test_send_blocks_at_max_in_flight_and_flush_gives_up_in_time() -> None:
    gateway = Devices()
    gateway.release.clear()
    with GatewaySender("http://gw", TOKENS, post=gateway.post, max_in_flight=1) as sender:
        sender.send(b"pt-1", message(0), 1)
        threading.Timer(0.2, gateway.release.set).start()
        sender.send(b"pt-2", message(0), 1)  # waits for pt-1's upload
        assert sender.wait_s >= 0.1
        sender.flush(5.0)
        gateway.release.clear()
        sender.send(b"pt-1", message(1), 1)
        with pytest.raises(ServiceUnavailable, match="1 messages not accepted by the gateway at http://gw/v1/uploads "
                                                     "within 0.1 s"):
            sender.flush(0.1)
        gateway.release.set()
        sender.flush(5.0)
        assert sender.acked_messages == 3


def test_closing_stops_an_upload_waiting_to_retry() -> None:
    gateway = Devices({"vrd1.one": [(503, {"Retry-After": "30"})] * 5})
    sender = GatewaySender("http://gw", TOKENS, post=gateway.post)
    sender.send(b"pt-1", message(0), 1)
    time.sleep(0.1)
    started = time.monotonic()
    sender.close()
    assert time.monotonic() - started < 5 and sender.errors == 1 and sender.acked_messages == 0
    assert "vrd1" not in repr(sender)


def test_the_tokens_of_a_cohort_come_from_its_tokens_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    devices = [("dev-1", "pt-1"), ("dev-2", "pt-2")]
    path = tmp_path / "tokens.jsonl"
    with create_tokens_file(path) as handle:
        write_tokens(handle, [DeviceToken(device, patient, f"vrd1.{patient}") for device, patient in devices])
    assert tokens_for(devices, read_tokens(path), source="t") == {b"pt-1": "vrd1.pt-1", b"pt-2": "vrd1.pt-2"}
    with pytest.raises(ConfigurationError, match="t binds patient pt-2 to device dev-2, but the run sends from dev-9"):
        tokens_for([("dev-9", "pt-2")], read_tokens(path), source="t")

    path.chmod(0o644)
    read_tokens(path)
    assert "may be read by others (mode 644)" in caplog.text
    path.write_text(path.read_text() + '{"device_id": "dev-3", "token": "vrd1.secret-3"}\n')
    with pytest.raises(ConfigurationError, match=r"line 3 is not a device token") as caught:
        read_tokens(path)
    assert "secret" not in str(caught.value)
    path.write_text("\n")
    with pytest.raises(ConfigurationError, match="holds no token"):
        read_tokens(path)


def test_a_connection_the_gateway_closed_while_idle_is_replaced_at_once() -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, but the connection is closed after each answer

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(202)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
            self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    slept: list[float] = []
    try:
        uploads = DeviceUploads(f"http://127.0.0.1:{server.server_port}", keep_alive=True, sleep=slept.append)
        assert [uploads.upload([message(seq)], "vrd1.t") for seq in range(3)] == [0, 0, 0]
        assert slept == []  # each stale connection was replaced without a retry's wait
        uploads.close()
    finally:
        server.shutdown()
        server.server_close()
