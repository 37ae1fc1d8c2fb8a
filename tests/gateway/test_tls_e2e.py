"""A real ``vitalrisk gateway`` over HTTPS on the session's broker and PostgreSQL.

Devices enrolled with ``vitalrisk devices enroll`` upload with their tokens: SMART on FHIR's
``fhirclient`` with the CA as its session's ``verify``, and ``vitalrisk replay --via-gateway
https://...`` with ``VITALS_GATEWAY_CA_FILE`` (without it the uploader stops at once: test_tls.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fhirclient.models.observation import Observation

from kernel.settings import Settings
from kernel.wire import decode_device_message
from tests.gateway.conftest import START_MS, GatewayProcess, enroll, gateway_settings, topic_records, vitalrisk
from tests.gateway.resources import observation
from tests.gateway.test_worker_e2e import fhir_server
from tests.gateway.tls import server_files

pytestmark = pytest.mark.integration


def test_devices_upload_over_https_with_fhirclient_and_replay(
        isolated: Settings, start_gateway: Callable[[Settings], GatewayProcess], tmp_path: Path) -> None:
    files = server_files(tmp_path / "tls")
    settings = gateway_settings(isolated, gateway_tls_cert_file=files.cert, gateway_tls_key_file=files.key,
                                gateway_ca_file=files.ca)
    fhir_token = enroll(settings, "pt-1", "dev-fhir")
    replay_token = enroll(settings, "pt-2", "dev-replay")
    gateway = start_gateway(settings)
    assert gateway.base.startswith("https://127.0.0.1:")
    assert f"gateway on {gateway.base}" in gateway.log.read_text()

    server = fhir_server(gateway.base + "/fhir", fhir_token)
    server.session.verify = str(files.ca)
    server.session.trust_env = False  # else requests prefers REQUESTS_CA_BUNDLE to the session's verify
    resource = Observation(observation("heart_rate", START_MS, 71.0, patient="pt-1", device="dev-fhir"))
    answer = server.post_json("Observation", resource.as_json())
    assert answer.status_code == 202, answer.text

    recording = tmp_path / "recording.csv"
    recording.write_text("timestamp,metric,value\n" + "".join(
        f"{START_MS + 60_000 + i * 10_000},heart_rate,{70 + i}\n" for i in range(6)))
    replay = ("replay", str(recording), "--patient", "pt-2", "--device", "dev-replay", "--via-gateway", gateway.base,
              "--token-env", "DEVICE_TOKEN")
    done = vitalrisk(settings, *replay, env={"DEVICE_TOKEN": replay_token})
    assert done.returncode == 0, done.stderr
    by_patient = {decode_device_message(r.value).patient_id for r in topic_records(settings)}
    assert by_patient == {"pt-1", "pt-2"}

    assert gateway.stop() == 0
