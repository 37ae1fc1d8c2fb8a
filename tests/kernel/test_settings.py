"""The one settings object (kernel/settings.py): read from ``VITALS_*`` variables, typed, frozen; bad
values refused naming the variable's field; a child process reads back exactly the settings it was given."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from kernel.settings import Settings, check_database_url, kafka_servers


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """An environment holding no ``VITALS_*`` setting, to set some in."""
    for name in Settings.model_fields:
        monkeypatch.delenv(f"VITALS_{name.upper()}", raising=False)
    return monkeypatch


def test_the_variables_are_read_with_their_prefix_and_their_types(env: pytest.MonkeyPatch) -> None:
    env.setenv("VITALS_PARTITIONS", "3")
    env.setenv("VITALS_GRACE_MS", "0")
    env.setenv("VITALS_WEBHOOK_TIMEOUT_S", "2.5")
    env.setenv("VITALS_STATE_DIR", "/tmp/vitals-state")
    env.setenv("VITALS_SNAPSHOT_KEY", "k" * 32)
    env.setenv("VITALS_SINK_READINGS_EVERY_MS", "0")
    env.setenv("VITALS_NOT_A_SETTING", "ignored")
    env.setenv("PARTITIONS", "9")  # no prefix: not ours
    s = Settings()
    assert (s.partitions, s.grace_ms, s.webhook_timeout_s, s.state_dir) == (3, 0, 2.5, Path("/tmp/vitals-state"))
    assert isinstance(s.snapshot_key, SecretStr) and s.snapshot_key.get_secret_value() == "k" * 32
    assert "k" * 32 not in repr(s), "a secret is never shown"
    assert s.sink_readings_every_ms == 0 and Settings(sink_readings_every_ms=None).sink_readings_every_ms is None


def test_without_variables_every_default_holds(env: pytest.MonkeyPatch) -> None:
    assert Settings() == Settings.model_construct()
    assert Settings().admin_database_url is None and Settings().snapshot_key is None


@pytest.mark.parametrize("variable,value", [
    ("VITALS_PARTITIONS", "0"),
    ("VITALS_PARTITIONS", "1025"),
    ("VITALS_PARTITIONS", "six"),
    ("VITALS_WINDOW_MS", "0"),
    ("VITALS_GRACE_MS", "-1"),
    ("VITALS_SESSION_TIMEOUT_S", "5"),
    ("VITALS_LIMIT_JSON_DEPTH", "2"),
    ("VITALS_LIMIT_JSON_DEPTH", "65"),
    ("VITALS_LIMIT_NUMBER_DIGITS", "12"),
    ("VITALS_LIMIT_MESSAGE_BYTES", "255"),
    ("VITALS_METRICS_PORT", "65536"),
    ("VITALS_WEB_PORT", "0"),
    ("VITALS_SINK_TIMESCALE", "maybe"),
    ("VITALS_SINK_READINGS_EVERY_MS", "-1"),
    ("VITALS_ALERT_RISK_ENTER", "0"),
    ("VITALS_ALERT_RISK_ENTER", "1.5"),
    ("VITALS_ALERT_RISK_EXIT", "-0.1"),
    ("VITALS_WEBHOOK_BACKOFF_S", "0"),
    ("VITALS_MODEL", "tree"),
    ("VITALS_MODEL_PATIENT_INPUTS", "diagnoses,age_band"),
    ("VITALS_KAFKA_BOOTSTRAP", "localhost"),
    ("VITALS_KAFKA_BOOTSTRAP", "127.0.0.1:19092,broker"),
    ("VITALS_DATABASE_URL", "127.0.0.1:15432"),
    ("VITALS_ADMIN_DATABASE_URL", "postgresql://w@[::1/db"),
])
def test_a_bad_value_is_refused_naming_its_setting(env: pytest.MonkeyPatch, variable: str, value: str) -> None:
    env.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert [error["loc"][0] for error in caught.value.errors()] == [variable.removeprefix("VITALS_").lower()]


def test_the_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.partitions = 2


def test_a_child_reads_back_exactly_the_settings_it_was_given(env: pytest.MonkeyPatch) -> None:
    given = Settings(partitions=2, kafka_bootstrap="127.0.0.1:9092, broker-2:9093", grace_ms=0, idle_timeout_s=0.5,
                     snapshot_key=SecretStr("s" * 32), webhook_secret=SecretStr("w"), sink_readings_every_ms=5_000,
                     admin_database_url="postgresql://owner@127.0.0.1:15432/vitalrisk", data_dir=Path("/tmp/f"))
    variables = given.as_env()
    assert variables["VITALS_SNAPSHOT_KEY"] == "s" * 32, "the child needs the secret itself"
    assert "VITALS_ALERTER_API_TOKEN" not in variables, "an unset setting is left unset"
    for name, value in variables.items():
        env.setenv(name, value)
    assert Settings() == given


def test_kafka_servers_are_host_port_pairs() -> None:
    assert kafka_servers(" a:1 ,b.example:65535") == [("a", 1), ("b.example", 65535)]
    assert kafka_servers("[::1]:9092") == [("[::1]", 9092)]
    for bad in ("a:0", "a:65536", ":9092", "a:", "a:90x2", "a:1,,b:2"):
        with pytest.raises(ValueError, match="host:port"):
            kafka_servers(bad)


def test_a_database_url_or_connection_string_is_checked_without_echoing_its_password() -> None:
    assert check_database_url("host=127.0.0.1 port=15432 dbname=vitalrisk user=w").startswith("host=")
    with pytest.raises(ValueError, match="libpq URL") as caught:
        check_database_url("postgresql://w:hunter2@[::1/v")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ValueError, match="libpq URL"):
        check_database_url("host=127.0.0.1 colour=blue")
