"""The gateway fuzzed from its own OpenAPI description (schemathesis), on the real broker and PostgreSQL.

Schemathesis reads ``GET /openapi.json`` of a running ``vitalrisk gateway`` and sends what the
document allows and what it does not, with a valid device token and without. Every answer must
be one the document lists, with the content type, headers and body shape it gives; no 5xx at
all (the broker is up, so not even the documented 503); methods the document does not name get
405 with ``Allow``; requests without the token get 401. Not checked: that every schema-valid body
is accepted, since a valid-looking message for another patient is rightly refused with 403.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from kernel.settings import Settings
from tests.gateway.conftest import GatewayProcess, enroll, gateway_settings, topic_records

pytestmark = pytest.mark.integration

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
          "response_schema_conformance,negative_data_rejection,missing_required_header,unsupported_method,"
          "allow_header_conformance,ignored_auth")


def test_no_answer_breaks_the_openapi_document_and_none_is_a_5xx(
        isolated: Settings, start_gateway: Callable[[Settings], GatewayProcess], tmp_path: Path) -> None:
    if not SCHEMATHESIS.exists():
        pytest.fail("schemathesis is not installed: pip install -e '.[test]'")
    settings = gateway_settings(isolated, gateway_rate_per_device=10_000.0, gateway_burst=10_000,
                                gateway_max_body_bytes=65_536)
    token = enroll(settings, "pt-1", "dev-1")
    gateway = start_gateway(settings)
    done = subprocess.run(
        [str(SCHEMATHESIS), "run", f"{gateway.base}/openapi.json", "--checks", CHECKS,
         "-H", f"Authorization: Bearer {token}", "--max-examples", "60", "--seed", "42", "--workers", "2",
         "--request-timeout", "30", "--generation-database", "none", "--no-color",
         "--report", "junit", "--report-dir", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=900)  # its crash cache lands there, not in the checkout
    output = done.stdout[-8000:] + done.stderr[-2000:]
    print(done.stdout[-3000:])  # the run's summary, shown with -s or on failure
    assert done.returncode == 0, output
    assert gateway.metric("vitals_gateway_requests_total") > 200, output
    for status in ("500", "501", "502", "503", "504"):
        assert gateway.metric("vitals_gateway_requests_total", {"status": status}) == 0
    log = gateway.log.read_text()
    assert "Traceback" not in log, log[-3000:]
    assert token not in log
    # whatever the fuzzer got accepted is on the topic for the token's own patient only
    assert all(record.key == b"pt-1" for record in topic_records(settings, timeout_ms=1000))
    assert gateway.stop() == 0
