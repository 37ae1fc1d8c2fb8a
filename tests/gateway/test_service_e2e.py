"""The gateway end to end on the real broker and PostgreSQL: a ``vitalrisk gateway`` process, devices
enrolled and revoked with ``vitalrisk devices``, records read back from the readings topic.

- enrol, upload natively: 202 only once the record is on the topic, keyed by patient, with the
  gateway's receive time in its header; a retried upload is produced once;
- no token, a revoked token, another patient: 401, 401, 403, and nothing reaches the topic;
  an oversized body and a gzip bomb: 413; a flood: 429 with Retry-After;
- a malformed FHIR resource (400), an unknown LOINC code and a wrong unit (422), on the FHIR
  routes and on ``/v1/uploads``: an OperationOutcome naming the element, nothing on the topic;
- a simulated cohort enrolled at once (a tokens file, mode 0600) and the load generator through
  the gateway, each device with its own token: the topic holds every acknowledged message once;
- the broker stopped for 20 s: 503 with Retry-After; after it is back, the device's retries are accepted
  and the topic holds every reading exactly once.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from infra.kafka import LocalKafka
from infra.processes import child_env
from kernel.settings import Settings
from kernel.wire import decode_device_message, encode_device_message
from stream.cli import main
from tests.conftest import Services
from tests.gateway.conftest import START_MS, GatewayProcess, enroll, gateway_settings, topic_records, vitalrisk
from tests.gateway.resources import bundle, dumps, mutated, observation

pytestmark = pytest.mark.integration

#: How long the broker stays down in the outage test, seconds.
OUTAGE_S = 20.0


def native_message_with_unit(patient: str, device: str, unit: str) -> bytes:
    return dumps({"schema": "vitalrisk.device/1", "device_id": device, "patient_id": patient, "seq": 1,
                  "sent_at": START_MS, "readings": [{"metric": "heart_rate", "t": START_MS, "value": 71.0,
                                                     "unit": unit}]})


def native(patient: str, device: str, seq: int, n: int = 5) -> bytes:
    return encode_device_message(device_id=device, patient_id=patient, seq=seq, sent_at=START_MS,
                                 readings=[("heart_rate", START_MS + seq * 60_000 + i * 1000, 70.0 + i)
                                           for i in range(n)])


def test_enrolled_device_uploads_and_the_record_is_on_the_topic_once(
        isolated: Settings, start_gateway: Callable[[Settings], GatewayProcess]) -> None:
    settings = gateway_settings(isolated, gateway_auth_cache_s=0.5)
    token = enroll(settings, "pt-1", "dev-1")
    gateway = start_gateway(settings)
    before_ms = int(time.time() * 1000)

    answer = gateway.post(native("pt-1", "dev-1", 1), token)
    assert answer.status == 202, answer.body
    assert answer.body["messages"] == 1 and answer.body["readings"] == 5
    records = topic_records(settings)
    assert len(records) == 1  # on the topic when 202 came back
    record = records[0]
    assert record.key == b"pt-1"
    headers = dict(record.headers)
    received = int(headers["vitalrisk.received_ms"])
    assert received == answer.body["received_ms"] and before_ms <= received <= int(time.time() * 1000)
    batch = decode_device_message(record.value)
    assert (batch.patient_id, batch.device_id, batch.seq, len(batch.points)) == ("pt-1", "dev-1", 1, 5)

    again = gateway.post(native("pt-1", "dev-1", 1), token)  # the device did not see the answer: it retries
    assert (again.status, again.body["duplicates"]) == (202, 1)
    assert len(topic_records(settings)) == 1
    assert gateway.metric("vitals_gateway_readings_total", {"format": "native"}) == 5

    listed = vitalrisk(settings, "devices", "list")
    assert listed.returncode == 0 and "dev-1" in listed.stdout and token not in listed.stdout
    revoked = vitalrisk(settings, "devices", "revoke", "dev-1")
    assert revoked.returncode == 0, revoked.stderr
    time.sleep(0.6)  # VITALS_GATEWAY_AUTH_CACHE_S
    answer = gateway.post(native("pt-1", "dev-1", 2), token)
    assert answer.status == 401
    assert len(topic_records(settings)) == 1
    again = vitalrisk(settings, "devices", "revoke", "dev-1")
    assert again.returncode == 2 and again.stderr.startswith("vitalrisk: no enrolled device")
    assert gateway.stop() == 0
    assert token not in gateway.log.read_text()


def test_bad_uploads_get_their_status_and_nothing_reaches_the_topic(
        isolated: Settings, start_gateway: Callable[[Settings], GatewayProcess]) -> None:
    settings = gateway_settings(isolated, gateway_max_body_bytes=16_384, gateway_max_decompressed_bytes=65_536,
                                gateway_rate_per_device=1.0, gateway_burst=5)
    token = enroll(settings, "pt-1", "dev-1")
    flooder = enroll(settings, "pt-2", "dev-2")
    gateway = start_gateway(settings)

    assert gateway.post(native("pt-1", "dev-1", 1), None).status == 401
    assert gateway.post(native("pt-1", "dev-1", 1), "vrd1.000000000000." + "A" * 43).status == 401
    answer = gateway.post(native("pt-9", "dev-1", 1), token)
    assert (answer.status, answer.body["reason"]) == (403, "patient_mismatch")
    answer = gateway.post(b" " * 20_000, token)
    assert (answer.status, answer.body["reason"]) == (413, "too_large")
    bomb = gzip.compress(b"[" + b" " * 20_000_000 + b"]")  # 20 MB of JSON in about 20 kB
    answer = gateway.post(bomb[:16_000], token, headers={"Content-Encoding": "gzip"})
    assert (answer.status, answer.body["reason"]) == (413, "too_large")
    assert topic_records(settings, timeout_ms=1000) == []

    statuses = [gateway.post(native("pt-2", "dev-2", seq), flooder) for seq in range(10)]
    assert [a.status for a in statuses].count(202) <= 6  # a burst of 5, plus what a second earns
    refused = [a for a in statuses if a.status == 429]
    assert refused and all(int(a.headers["Retry-After"]) >= 1 for a in refused)
    assert len(topic_records(settings)) == [a.status for a in statuses].count(202)
    assert gateway.metric("vitals_gateway_rejections_total", {"reason": "rate_limited"}) == len(refused)
    assert gateway.metric("vitals_gateway_auth_failures_total") == 2
    assert gateway.stop() == 0


#: Bad FHIR content, each refused with its status and reason, naming the element at fault.
BAD_FHIR = {
    "malformed resource": (mutated(observation("heart_rate", START_MS, 71, patient="pt-1"), "effectiveDateTime",
                                   "yesterday"), 400, "malformed_fhir", "Observation.effectiveDateTime"),
    "unknown LOINC code": (mutated(observation("heart_rate", START_MS, 71, patient="pt-1"), "code.coding.0.code",
                                   "2339-0"), 422, "unknown_loinc", "Observation.code.coding[0].code"),
    "wrong unit": (observation("heart_rate", START_MS, 71, patient="pt-1", code="%"), 422, "wrong_unit",
                   "Observation.valueQuantity.code"),
    "wrong unit in a Bundle": (bundle([observation("heart_rate", START_MS, 71, patient="pt-1"),
                                       observation("oxygen_saturation", START_MS, 0.97, patient="pt-1", code="1")]),
                               422, "wrong_unit", "Bundle.entry[1].resource.valueQuantity.code"),
}


def test_bad_fhir_content_gets_an_operation_outcome_naming_the_element_and_nothing_reaches_the_topic(
        isolated: Settings, start_gateway: Callable[[Settings], GatewayProcess]) -> None:
    settings = gateway_settings(isolated)
    token = enroll(settings, "pt-1", "dev-1")
    gateway = start_gateway(settings)
    fhir = {"Content-Type": "application/fhir+json"}
    for case, (document, status, reason, element) in BAD_FHIR.items():
        route = "/fhir" if document["resourceType"] == "Bundle" else "/fhir/Observation"
        for path in (route, "/v1/uploads"):  # the FHIR route, and the generic one with FHIR's media type
            answer = gateway.post(dumps(document), token, path=path, headers=fhir)
            assert answer.status == status, (case, path, answer.body)
            assert answer.headers["Content-Type"].startswith("application/fhir+json"), (case, path)
            assert answer.body["resourceType"] == "OperationOutcome", (case, path)
            issue, = answer.body["issue"]
            assert issue["severity"] == "error" and issue["expression"] == [element], (case, path, issue)
            assert issue["details"]["coding"][0]["code"] == reason and issue["details"]["text"], (case, path, issue)
    native = gateway.post(native_message_with_unit("pt-1", "dev-1", "%"), token)  # native: JSON, not FHIR
    assert (native.status, native.body["reason"]) == (422, "wrong_unit") and native.body["detail"].startswith("reading 0:")
    assert topic_records(settings, timeout_ms=1000) == []
    for reason in ("malformed_fhir", "unknown_loinc"):
        assert gateway.metric("vitals_gateway_rejections_total", {"reason": reason}) == 2, reason
    assert gateway.metric("vitals_gateway_rejections_total", {"reason": "wrong_unit"}) == 5
    assert gateway.stop() == 0


def test_broker_down_uploads_get_503_and_afterwards_the_topic_holds_every_reading_once(
        services: Services, isolated: Settings, start_gateway: Callable[[Settings], GatewayProcess]) -> None:
    settings = gateway_settings(isolated, gateway_produce_timeout_s=2.0)
    token = enroll(settings, "pt-1", "dev-1")
    gateway = start_gateway(settings)
    assert gateway.post(native("pt-1", "dev-1", 0), token).status == 202

    kafka = LocalKafka(services.base)
    kafka.stop()
    stopped = time.monotonic()
    pending: list[int] = []
    try:
        for seq in (1, 2, 3):
            answer = gateway.post(native("pt-1", "dev-1", seq), token)
            assert (answer.status, answer.body["reason"]) == (503, "broker_unavailable"), answer.body
            assert int(answer.headers["Retry-After"]) >= 1
            pending.append(seq)
        while time.monotonic() - stopped < OUTAGE_S:  # the device keeps retrying while the broker is away
            retried = gateway.post(native("pt-1", "dev-1", pending[0]), token)
            assert retried.status == 503
            time.sleep(1)
    finally:
        kafka.start()

    deadline = time.monotonic() + 60
    while pending and time.monotonic() < deadline:  # the device retries until each upload is accepted
        answer = gateway.post(native("pt-1", "dev-1", pending[0]), token)
        if answer.status == 202:
            pending.pop(0)
        else:
            assert answer.status == 503, answer.body
            time.sleep(1)
    assert pending == [], "every upload accepted once the broker was back"
    seqs = sorted(decode_device_message(r.value).seq for r in topic_records(settings))
    assert seqs == [0, 1, 2, 3], "each reading exactly once"
    assert gateway.stop() == 0


def test_vitalrisk_replay_via_the_gateway_lands_once_even_when_run_twice(
        isolated: Settings, start_gateway: Callable[[Settings], GatewayProcess], tmp_path: Path) -> None:
    settings = gateway_settings(isolated)
    token = enroll(settings, "pt-1", "dev-1")
    gateway = start_gateway(settings)
    recording = tmp_path / "recording.csv"
    rows = [f"{START_MS + 60_000 + i * 10_000},heart_rate,{70 + i % 7}" for i in range(18)]  # 3 minutes
    recording.write_text("timestamp,metric,value\n" + "\n".join(rows) + "\n")
    replay = ("replay", str(recording), "--patient", "pt-1", "--device", "dev-1", "--via-gateway", gateway.base)

    done = vitalrisk(settings, *replay, "--token-env", "DEVICE_TOKEN", env={"DEVICE_TOKEN": token})
    assert done.returncode == 0, done.stderr
    records = topic_records(settings)
    assert len(records) == 3 and all(dict(r.headers).get("vitalrisk.received_ms") for r in records)
    assert sum(len(decode_device_message(r.value).points) for r in records) == 18
    again = vitalrisk(settings, *replay, "--token", token)  # the same messages again: accepted once
    assert again.returncode == 0, again.stderr
    assert len(topic_records(settings)) == 3
    assert gateway.metric("vitals_gateway_messages_total", {"format": "native", "outcome": "duplicate"}) == 3

    wrong = vitalrisk(settings, *replay, "--token", "vrd1.000000000000." + "A" * 43)
    assert wrong.returncode == 2 and wrong.stderr.startswith("vitalrisk: the gateway refused the device token")
    assert gateway.stop() == 0


def test_the_load_generator_sends_through_the_gateway_each_device_with_its_own_token(
        isolated: Settings, start_gateway: Callable[[Settings], GatewayProcess], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    settings = gateway_settings(isolated)
    for name, value in child_env(settings).items():  # the commands run in this process, as `vitalrisk` would
        monkeypatch.setenv(name, value)
    tokens = tmp_path / "tokens.jsonl"
    assert main(["devices", "enroll", "--cohort", "20", "--seed", "7", "--out", str(tokens)]) == 0
    enrolled = capsys.readouterr()
    assert enrolled.out == "" and "and 19 more" in enrolled.err
    assert tokens.stat().st_mode & 0o777 == 0o600
    lines = [json.loads(line) for line in tokens.read_text().splitlines()]
    assert len(lines) == 20 and all(line["token"] not in enrolled.err for line in lines)
    assert main(["devices", "enroll", "--cohort", "21", "--seed", "7", "--out", str(tmp_path / "more")]) == 2
    assert "already enrolled" in capsys.readouterr().err and not (tmp_path / "more").exists(), "all or nothing"
    gateway = start_gateway(settings)

    status = main(["simulate", "--patients", "20", "--seed", "7", "--rate", "600", "--duration", "3",
                   "--via-gateway", gateway.base, "--tokens", str(tokens)])
    run = capsys.readouterr()
    assert status == 0, run.err + run.out
    sent = int(run.out.split("sent", 1)[1].split("messages")[0].replace(",", ""))
    acked = int(run.out.split("acknowledged", 1)[1].split("messages")[0].replace(",", ""))
    assert acked == sent >= 40, run.out  # two rounds of 20 devices at least
    records = topic_records(settings)
    batches = [decode_device_message(r.value) for r in records]
    assert len({(b.device_id, b.seq) for b in batches}) == len(records) == acked, "every acknowledged message once"
    assert {(b.device_id, b.patient_id) for b in batches} == {(line["device_id"], line["patient_id"]) for line in lines}
    assert all(r.key == b.patient_id.encode() and dict(r.headers).get("vitalrisk.received_ms")
               for r, b in zip(records, batches))
    assert gateway.metric("vitals_gateway_messages_total", {"format": "native", "outcome": "produced"}) == acked
    assert gateway.stop() == 0
    assert not any(line["token"] in run.out + run.err + gateway.log.read_text() for line in lines)
