"""End to end: with the paging system down for 30 s, the page arrives exactly once after it returns.

The real alerter retries with backoff (capped at 2 s here), auditing every failed attempt. Midway
through the outage it is killed (SIGKILL) and restarted: the page waits in the outbox, the
replayed scores issue nothing new, and the pager, started 30 s after the first failure, receives
the page once. Nothing is dead-lettered.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.alerts.conftest import AlertingStack, news2_score, read_jsonl, wait_for
from tests.alerts.test_e2e_paging import produce, query

pytestmark = pytest.mark.integration

PATIENT = "pt-e2e0002"
OUTAGE_S = 30.0


def test_page_survives_a_30s_receiver_outage_and_arrives_once(alerting: AlertingStack) -> None:
    settings = alerting.settings
    alerter = alerting.start_alerter()
    produce(settings, [news2_score(PATIENT, m, n) for m, n in [(1, 3), (2, 7), (3, 8), (4, 9)]])

    wait_for("a failed attempt", lambda: query(settings, "SELECT 1 FROM webhook_deliveries WHERE outcome = 'retry'"),
             timeout_s=60, procs=(alerter,))
    outage_began = time.monotonic()
    (notification_id,) = query(settings, "SELECT notification_id FROM alert_notifications")[0]
    time.sleep(3)
    alerter.stop(signal.SIGKILL)
    alerter = alerting.start_alerter()  # recovers the undelivered page from the outbox
    wait_for("the new alerter to take the partitions over",
             lambda: "alert state of 1 patients loaded" in alerter.tail(50_000), timeout_s=25, procs=(alerter,))
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_began)))
    assert alerter.alive()
    assert query(settings, "SELECT count(*) FROM alert_notifications") == [(1,)], "the replay issued no new page"
    assert read_jsonl(alerting.record) == []

    pager = alerting.start_pager()
    back = time.monotonic()  # the pager listens: from here the page waits only for the next retry
    records = wait_for("the page after the outage", lambda: read_jsonl(alerting.record), timeout_s=20,
                       procs=(alerter, pager))
    arrived_after_s = time.monotonic() - back
    time.sleep(2.5)  # longer than the backoff cap: a second copy would have come by now
    records = read_jsonl(alerting.record)
    assert [r["idempotency_key"] for r in records] == [f"{notification_id}"], records
    assert not records[0]["duplicate"]
    assert arrived_after_s < 5.0, arrived_after_s

    attempts = query(settings, "SELECT attempt, outcome FROM webhook_deliveries WHERE notification_id = %s "
                               "ORDER BY attempt", notification_id)
    outcomes = [o for _, o in attempts]
    assert outcomes[-1] == "delivered" and outcomes.count("delivered") == 1
    assert set(outcomes[:-1]) == {"retry"} and len(outcomes) >= 10, attempts  # ~30 s of 0.2..2 s backoff
    assert "page al-" in alerter.tail(20_000) and "delivered to pager" in alerter.tail(20_000)
    assert query(settings, "SELECT count(*) FROM webhook_deadletters") == [(0,)]
    assert alerter.stop() == 0
