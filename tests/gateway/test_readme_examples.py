"""The README's device-integration examples work as written, on a real gateway, broker and PostgreSQL.

The section "Connecting a device or a vendor's cloud" shows the enrolment command and one ``curl``
upload per format; each upload's content type, path and body are read from the README itself and
sent with the token of the device the README enrols.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from kernel.settings import Settings
from kernel.wire import decode_device_message
from tests.conftest import ROOT
from tests.gateway.conftest import GatewayProcess, enroll, gateway_settings, topic_records

pytestmark = pytest.mark.integration

SECTION = re.compile(r"^## Connecting a device.*?(?=^## )", re.MULTILINE | re.DOTALL)
ENROL = re.compile(r"vitalrisk devices enroll --patient (\S+) --device (\S+)\)")
UPLOAD = re.compile(r"-H 'Content-Type: ([^']+)' http://127\.0\.0\.1:8088(/\S+) -d \\\n '(.*?)'\n", re.DOTALL)


def readme_section() -> str:
    found = SECTION.search((ROOT / "README.md").read_text())
    assert found, "README.md has no section 'Connecting a device'"
    return found.group(0)


def test_the_readme_shows_an_upload_in_each_format() -> None:
    kinds = {content_type for content_type, _, _ in UPLOAD.findall(readme_section())}
    assert kinds == {"application/json", "application/fhir+json", "application/vnd.openmhealth+json"}


def test_the_readme_examples_are_accepted_and_reach_the_topic(
        isolated: Settings, start_gateway: Callable[[Settings], GatewayProcess]) -> None:
    section = readme_section()
    enrolment = ENROL.search(section)
    assert enrolment, "the README's enrolment command"
    patient, device = enrolment.groups()
    settings = gateway_settings(isolated)
    token = enroll(settings, patient, device)
    gateway = start_gateway(settings)

    for content_type, path, body in UPLOAD.findall(section):
        answer = gateway.post(body.encode(), token, path=path, headers={"Content-Type": content_type})
        assert answer.status == 202, (content_type, answer.body)

    messages = [decode_device_message(record.value) for record in topic_records(settings)]
    assert len(messages) == 3
    assert {m.patient_id for m in messages} == {patient}
    assert all(m.points == [("heart_rate", m.points[0][1], 71.0)] for m in messages)
    assert gateway.stop() == 0
