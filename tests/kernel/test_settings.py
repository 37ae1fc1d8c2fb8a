"""The one settings object (kernel/settings.py): read from ``VITALS_*`` variables, typed, frozen; bad
values refused naming the variable's field; a child process reads back exactly the settings it was given."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from kernel.settings import NOT_SETTINGS, TEST_PREFIX, Settings, check_database_url, kafka_servers

ROOT = Path(__file__).resolve().parents[2]


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


def test_an_unknown_variable_is_refused_naming_it_and_a_close_match(env: pytest.MonkeyPatch) -> None:
    typo = "VITALS_" + "PARTITION"  # spelt apart, so the repository scan below does not find it
    env.setenv(typo, "3")
    env.setenv("VITALS_" + "SOMETHING_ELSE", "x")
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = str(caught.value.errors()[0]["msg"])
    assert f"unknown variables {typo} (did you mean VITALS_PARTITIONS?), VITALS_{'SOMETHING_ELSE'}: " in message
    assert "3" not in message.replace("VITALS_", ""), "a value is never echoed"


def test_the_harness_and_other_programs_variables_are_not_unknown(env: pytest.MonkeyPatch) -> None:
    env.setenv(TEST_PREFIX + "ANYTHING", "1")
    for name in NOT_SETTINGS:
        env.setenv(name, "1")
    assert Settings().partitions == 6


def test_every_vitals_variable_the_repository_names_is_a_setting_or_exempt() -> None:
    """Makefile, CI, compose, scripts, docs and tests: none may name a variable the settings would refuse."""
    import re

    settings = {f"VITALS_{name.upper()}" for name in Settings.model_fields}
    files = [ROOT / name for name in ("Makefile", ".ci/run", "docker-compose.yml", "README.md", "Dockerfile")]
    for folder in ("docs", "tests", "bench", "infra", "sinks", "grafana", "stream", "kernel", "simulators", "gateway",
                   "models"):
        files += [p for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix in
                  (".py", ".md", ".sh", ".yml", ".yaml", ".sql", ".toml", "")]
    unknown = {}
    for path in files:
        if not path.exists():
            continue
        for name in re.findall(r"\bVITALS_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(errors="replace")):
            if name not in settings and name not in NOT_SETTINGS and not name.startswith(TEST_PREFIX):
                unknown.setdefault(name, str(path.relative_to(ROOT)))
    assert not unknown, f"VITALS_* names that are no setting (add to NOT_SETTINGS if another program reads them): {unknown}"


@pytest.mark.parametrize("variables,rule", [
    ({"VITALS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "SASL_SSL needs VITALS_KAFKA_USERNAME and VITALS_KAFKA_PASSWORD"),
    ({"VITALS_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "VITALS_KAFKA_USERNAME": "worker"}, "needs"),
    ({"VITALS_KAFKA_USERNAME": "worker", "VITALS_KAFKA_PASSWORD": "pw"}, "PLAINTEXT sends no username or password"),
    ({"VITALS_KAFKA_SECURITY_PROTOCOL": "SSL", "VITALS_KAFKA_PASSWORD": "pw"}, "SSL sends no username"),
    ({"VITALS_KAFKA_CA_FILE": "{ca}"}, "PLAINTEXT uses no TLS; unset VITALS_KAFKA_CA_FILE"),
    ({"VITALS_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "VITALS_KAFKA_USERNAME": "w", "VITALS_KAFKA_PASSWORD": "pw",
      "VITALS_KAFKA_CERT_FILE": "{ca}"}, "SASL_PLAINTEXT uses no TLS"),
    ({"VITALS_KAFKA_SECURITY_PROTOCOL": "SSL", "VITALS_KAFKA_KEY_FILE": "{ca}"}, "KEY_FILE needs VITALS_KAFKA_CERT_FILE"),
])
def test_kafka_security_settings_that_cannot_work_together_are_refused(
        env: pytest.MonkeyPatch, tmp_path: Path, variables: dict[str, str], rule: str) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-")
    for name, value in variables.items():
        env.setenv(name, value.format(ca=ca))
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert rule in str(caught.value.errors()[0]["msg"])
    assert "pw" not in str(caught.value), "the password is never in the error"


@pytest.mark.parametrize("variable", ["VITALS_KAFKA_CA_FILE", "VITALS_KAFKA_CERT_FILE", "VITALS_KAFKA_KEY_FILE"])
def test_a_tls_file_that_does_not_exist_is_refused_at_load(env: pytest.MonkeyPatch, tmp_path: Path,
                                                          variable: str) -> None:
    env.setenv("VITALS_KAFKA_SECURITY_PROTOCOL", "SSL")
    env.setenv(variable, str(tmp_path / "missing.pem"))
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert caught.value.errors()[0]["loc"] == (variable.removeprefix("VITALS_").lower(),)


def test_secured_kafka_settings_load_and_hide_the_password(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-")
    env.setenv("VITALS_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    env.setenv("VITALS_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    env.setenv("VITALS_KAFKA_USERNAME", "worker")
    env.setenv("VITALS_KAFKA_PASSWORD", "hunter2-hunter2")
    env.setenv("VITALS_KAFKA_CA_FILE", str(ca))
    env.setenv("VITALS_KAFKA_CHECK_HOSTNAME", "false")
    s = Settings()
    assert (s.kafka_username, s.kafka_ca_file, s.kafka_check_hostname) == ("worker", ca, False)
    assert "hunter2" not in repr(s) and "hunter2" not in str(s)
    assert s.as_env()["VITALS_KAFKA_PASSWORD"] == "hunter2-hunter2", "a child process needs the password itself"
