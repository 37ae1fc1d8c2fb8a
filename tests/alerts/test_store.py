"""The alert tables on the real PostgreSQL, written as the least-privileged writer role."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from sinks.webhook import Attempt, Delivery
from stream.alerts import AlertEngine, AlertPolicy
from stream.alerts.commands import run_ack, run_silence, run_unsilence
from kernel.errors import AlertNotFiring, InvalidRequest, SilenceEnded, UnknownAlert, UnknownSilence
from sinks.alert_store import AlertStore, Batch, alert_row
from kernel.settings import Settings
from stream.alerts.rules import RISK_HIGH
from tests.alerts.conftest import news2_score
from tests.alerts.scores import at, policy, risk_score

pytestmark = pytest.mark.integration


def a_batch(engine: AlertEngine, patient: str, minutes: list[tuple[int, int]]) -> Batch:
    batch = Batch()
    for minute, total in minutes:
        outcome = engine.on_score(news2_score(patient, minute, total), now_ms=minute * 60_000)
        state = engine.snapshot(patient)
        assert state is not None
        batch.states[patient] = (3, state)
        batch.events += outcome.events
        batch.pages += [(p, ("pager",), 1_000) for p in outcome.pages]
        row = alert_row(state, "news2_high", "critical")
        if row is not None:
            assert row.state.alert_id is not None
            batch.alerts[row.state.alert_id] = row
    return batch


def test_a_batch_commits_once_and_replays_add_nothing(isolated: Settings) -> None:
    engine = AlertEngine(AlertPolicy())
    batch = a_batch(engine, "pt-s1", [(1, 8), (2, 8)])
    (page,) = [p for p, _, _ in batch.pages]

    async def main() -> None:
        async with AlertStore(isolated.database_url) as store:
            assert await store.persist(batch) == {page.notification_id}
            assert await store.persist(batch) == set(), "a replayed batch issues no page twice"
            (partition, state), = await store.load_states([3])
            assert partition == 3 and state == engine.snapshot("pt-s1")
            assert await store.load_states([0, 1]) == []
            (pending,) = await store.pending_deliveries(within_s=3600)
            assert (pending.page, pending.receiver, pending.source_ts_ms) == (page, "pager", 1_000)
            await store.record_attempt(Attempt(page.notification_id, "pager", 1, "retry", 503, "HTTP 503", 3.0))
            assert len(await store.pending_deliveries(within_s=3600)) == 1
            await store.record_attempt(Attempt(page.notification_id, "pager", 2, "delivered", 200, None, 2.0))
            assert await store.pending_deliveries(within_s=3600) == []
            await store.dead_letter(Delivery("x:firing", "x", "pager", "http://p", b'{"a": 1}'), 3, 500, "HTTP 500")

            # acknowledgements: the first one counts; unknown and resolved alerts are refused
            assert (await store.acknowledge(page.alert_id, by="rn-1", via="http"))[0] == "rn-1"
            assert (await store.acknowledge(page.alert_id, by="rn-2", via="cli"))[0] == "rn-1"
            (ack,) = await store.acknowledgements_for([page.alert_id, "al-other"])
            assert ack[:2] == (page.alert_id, "rn-1")
            with pytest.raises(UnknownAlert):
                await store.acknowledge("al-nope", by="rn-1", via="http")
            with pytest.raises(InvalidRequest):
                await store.acknowledge(page.alert_id, by="", via="http")
            resolved = a_batch(engine, "pt-s1", [(3, 1), (4, 1), (5, 1)])
            await store.persist(resolved)
            with pytest.raises(AlertNotFiring):
                await store.acknowledge(page.alert_id, by="rn-1", via="http")

            silence = await store.add_silence(patient_id="pt-s1", kind="risk_high", minutes=30, by="rn-1",
                                              reason="procedure")
            assert silence.ends_ms - silence.starts_ms == 30 * 60_000
            assert await store.active_silences() == [silence]
            with pytest.raises(InvalidRequest):
                await store.add_silence(patient_id=None, kind=None, minutes=0, by="rn-1", reason="x")
            listed = await store.list_alerts(state="resolved")
            assert [a["alert_id"] for a in listed] == [page.alert_id]
            assert listed[0]["acknowledged_by"] == "rn-1"

    asyncio.run(main())
    with psycopg.connect(isolated.database_url) as conn:
        events = conn.execute("SELECT event FROM alert_events WHERE kind = 'news2_high' ORDER BY at, event").fetchall()
        assert [e for (e,) in events] == ["pending", "firing", "resolved"]


def test_the_writer_may_update_alert_state_columns_only(isolated: Settings) -> None:
    engine = AlertEngine(AlertPolicy())
    batch = a_batch(engine, "pt-s2", [(1, 8), (2, 8)])
    asyncio.run(_persist(isolated, batch))
    forbidden = ["UPDATE alerts SET patient_id = 'pt-other'", "UPDATE alerts SET kind = 'x'",
                 "DELETE FROM alerts", "UPDATE acknowledgements SET acknowledged_by = 'x'", "DELETE FROM silences",
                 "UPDATE webhook_deliveries SET outcome = 'delivered'", "DELETE FROM alert_events",
                 "UPDATE alert_notifications SET page = '{}'"]
    for statement in forbidden:
        with psycopg.connect(isolated.database_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
    with psycopg.connect(isolated.database_url) as conn:
        conn.execute("UPDATE alerts SET state = 'resolved', updated_at = now()")
        conn.execute("UPDATE alert_state SET state = state, updated_at = now()")


async def _persist(settings: Settings, batch: Batch) -> None:
    async with AlertStore(settings.database_url) as store:
        await store.persist(batch)


def test_the_ack_and_silence_commands_record_who_and_when(isolated: Settings,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    engine = AlertEngine(AlertPolicy())
    batch = a_batch(engine, "pt-s3", [(1, 8), (2, 8)])
    asyncio.run(_persist(isolated, batch))
    (page,) = [p for p, _, _ in batch.pages]
    assert run_ack(isolated, page.alert_id, by="rn-ward-3") == 0
    assert f"alert {page.alert_id} acknowledged by rn-ward-3 at " in capsys.readouterr().out
    assert run_silence(isolated, patient_id="pt-s3", all_patients=False, kind=None, minutes=15, by="rn-ward-3",
                       reason="wound dressing") == 0
    assert "(patient pt-s3, kind all) by rn-ward-3 until" in capsys.readouterr().out
    with psycopg.connect(isolated.database_url) as conn:
        assert conn.execute("SELECT acknowledged_by, via FROM acknowledgements").fetchall() == [("rn-ward-3", "cli")]
        assert conn.execute("SELECT created_by, reason, ends_at - starts_at = interval '15 min' "
                            "FROM silences").fetchall() == [("rn-ward-3", "wound dressing", True)]
    with pytest.raises(UnknownAlert):
        run_ack(isolated, "al-missing", by="rn-ward-3")
    with pytest.raises(InvalidRequest, match="every patient"):  # a wildcard must be asked for explicitly
        run_silence(isolated, patient_id=None, all_patients=False, kind=None, minutes=15, by="ops-1", reason="x")
    with pytest.raises(InvalidRequest, match="at most 60 minutes"):
        run_silence(isolated, patient_id=None, all_patients=True, kind=None, minutes=90, by="ops-1", reason="x")
    assert run_silence(isolated, patient_id=None, all_patients=True, kind=None, minutes=20, by="ops-1",
                       reason="maintenance") == 0
    wildcard = capsys.readouterr().out.split()[1]
    assert run_unsilence(isolated, wildcard, by="ops-2") == 0
    assert f"silence {wildcard} ended by ops-2 at " in capsys.readouterr().out
    with pytest.raises(SilenceEnded):
        run_unsilence(isolated, wildcard, by="ops-2")
    with pytest.raises(UnknownSilence):
        run_unsilence(isolated, "si-missing", by="ops-2")
    with psycopg.connect(isolated.database_url) as conn:
        assert conn.execute("SELECT ended_by, ends_at <= now(), ends_at = ended_at FROM silences "
                            "WHERE silence_id = %s", (wildcard,)).fetchall() == [("ops-2", True, True)]


def test_an_ended_silence_stops_muting_and_its_record_stays(isolated: Settings) -> None:
    async def main() -> None:
        async with AlertStore(isolated.database_url) as store:
            kept = await store.add_silence(patient_id="pt-s4", kind=None, minutes=30, by="rn-1", reason="bath")
            ended = await store.add_silence(patient_id="pt-s5", kind=None, minutes=30, by="rn-1", reason="bath")
            now_ms = ended.starts_ms + 1_000
            assert ended.matches("pt-s5", "news2_high", now_ms)
            after = await store.end_silence(ended.silence_id, by="rn-2")
            assert after.ends_ms <= now_ms + 60_000 and not after.matches("pt-s5", "news2_high", after.ends_ms)
            assert [s.silence_id for s in await store.active_silences()] == [kept.silence_id]
            with pytest.raises(InvalidRequest):
                await store.end_silence(kept.silence_id, by="")

    asyncio.run(main())
    with psycopg.connect(isolated.database_url) as conn:  # the writer may end one, never rewrite or delete it
        for statement in ("UPDATE silences SET patient_id = 'pt-other'", "UPDATE silences SET created_by = 'x'",
                          "UPDATE silences SET reason = 'x'", "DELETE FROM silences"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(statement)
        assert conn.execute("SELECT count(*) FROM silences").fetchone() == (2,)


def test_a_group_is_listed_once_with_its_heads(isolated: Settings) -> None:
    engine = AlertEngine(policy())
    batch = Batch()
    for minute in (1, 3, 5):
        outcome = engine.on_score(risk_score("pt-g1", minute, {"any": 0.8, "heart_failure": 0.9}), now_ms=at(minute))
        state = engine.snapshot("pt-g1")
        assert state is not None
        batch.states["pt-g1"] = (3, state)
        batch.events += outcome.events
        batch.pages += [(p, ("pager",), 1_000) for p in outcome.pages]
        for event in outcome.events:
            if (row := alert_row(state, event.kind, engine.policy.severity(event.kind))) is not None:
                assert row.state.alert_id is not None
                batch.alerts[row.state.alert_id] = row
    (page,) = [p for p, _, _ in batch.pages]

    async def main() -> list[dict[str, object]]:
        async with AlertStore(isolated.database_url) as store:
            await store.persist(batch)
            return await store.list_alerts(state="firing")

    listed = asyncio.run(main())
    assert [(a["alert_id"], a["kind"]) for a in listed] == [(page.alert_id, RISK_HIGH)]
    assert listed[0]["heads"] == [f"{RISK_HIGH}:any", f"{RISK_HIGH}:heart_failure"]
    with psycopg.connect(isolated.database_url) as conn:
        rows = conn.execute("SELECT kind, group_id FROM alerts WHERE patient_id = 'pt-g1' ORDER BY kind").fetchall()
    assert rows == [(RISK_HIGH, None), (f"{RISK_HIGH}:any", page.alert_id), (f"{RISK_HIGH}:heart_failure", page.alert_id)]
