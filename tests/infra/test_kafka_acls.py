"""infra/kafka_acls.py: the one table of who may do what on the secured broker, and the README's copy of it."""

from __future__ import annotations

import re
from pathlib import Path

from infra.kafka_acls import ADMIN, PRINCIPALS, acls, markdown_table, rules
from kernel.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"
FEATURE_TOPICS = ("readings_topic", "features_topic", "outcomes_topic", "patients_topic", "snapshots_topic")


def _writers(topic: str, settings: Settings) -> set[str]:
    return {p for p in PRINCIPALS for r in rules(p, settings) if r.name == topic and "Write" in r.operations}


def test_the_readme_table_is_the_code_table() -> None:
    text = README.read_text(encoding="utf-8")
    found = re.search(r"<!-- kafka-principals:[^>]*-->\n(.*?)\n<!-- /kafka-principals -->", text, re.S)
    assert found, "README.md lost its kafka-principals table"
    assert found.group(1) == markdown_table(Settings()), "README's table differs: paste markdown_table(Settings())"


def test_every_grant_names_a_setting() -> None:
    settings = Settings()
    for principal in PRINCIPALS:
        for rule in rules(principal, settings):
            assert "{" not in rule.name and rule.name, (principal, rule)


def test_the_issue_s_least_privilege_rules_hold() -> None:
    s = Settings()
    assert _writers(s.snapshots_topic, s) == {"trainer"}, "only the trainer writes snapshots"
    assert _writers(s.scores_topic, s) == {"worker", "operator"}, "forged scores would page"
    for principal in ("gateway", "device"):
        assert [str(r) for r in rules(principal, s)] == [f"Write topic {s.readings_topic}"]
    alerter_writes = {r.name for r in rules("alerter", s) if "Write" in r.operations}
    assert not alerter_writes & {getattr(s, t) for t in FEATURE_TOPICS + ("scores_topic",)}
    assert ADMIN not in PRINCIPALS, "the super user needs no ACLs"


def test_the_worker_s_faust_topics_do_not_reach_the_alerter_s() -> None:
    s = Settings()
    worker = rules("worker", s)
    assert not any(r.prefixed for r in worker)
    assert not any(r.name.startswith(f"{s.app_id}-alerter") for r in worker)


def test_renamed_topics_and_app_id_get_the_same_grants() -> None:
    s = Settings(readings_topic="t1.readings", app_id="run-7")
    names = {acl.resource_pattern.resource_name for acl in acls("worker", s)}
    assert {"t1.readings", "run-7", "run-7-state-changelog"} <= names
