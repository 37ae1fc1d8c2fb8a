"""kernel/kafka_security.py: each security protocol as each client library's options; the password never shown."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import faust
import pytest
from aiokafka import AIOKafkaProducer
from faust.types.auth import AuthProtocol, SASLMechanism
from kafka import KafkaProducer

from kernel.kafka_security import aiokafka_options, faust_credentials, kafka_python_options, ssl_context
from kernel.settings import Settings

PASSWORD = "correct-horse-battery-staple"
SASL = {"kafka_username": "worker", "kafka_password": PASSWORD}


def settings(protocol: str, **more: object) -> Settings:
    return Settings(kafka_security_protocol=protocol, **(SASL if protocol.startswith("SASL_") else {}), **more)


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT"])
def test_each_protocol_gives_each_library_the_same_options(protocol: str) -> None:
    s = settings(protocol)
    for options in (kafka_python_options(s), aiokafka_options(s)):
        assert options["security_protocol"] == protocol
        assert ("ssl_context" in options) == (protocol in ("SSL", "SASL_SSL"))
        if protocol.startswith("SASL_"):
            assert (options["sasl_mechanism"], options["sasl_plain_username"], options["sasl_plain_password"]) == (
                "SCRAM-SHA-512", "worker", PASSWORD)
        else:
            assert not any(name.startswith("sasl_") for name in options)


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT"])
def test_the_libraries_accept_the_options(protocol: str) -> None:
    """Both constructors take every option by name (neither connects before it is used or started)."""
    s = settings(protocol, kafka_bootstrap="127.0.0.1:9")
    config = KafkaProducer.DEFAULT_CONFIG
    assert set(kafka_python_options(s)) <= set(config)

    async def build() -> str:
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, **aiokafka_options(s))
        return str(producer.client._security_protocol)

    assert asyncio.run(build()) == protocol


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
def test_faust_gets_sasl_credentials_with_the_mechanism(mechanism: str) -> None:
    plain = faust_credentials(settings("SASL_PLAINTEXT", kafka_sasl_mechanism=mechanism))
    secured = faust_credentials(settings("SASL_SSL", kafka_sasl_mechanism=mechanism))
    assert isinstance(plain, faust.SASLCredentials) and isinstance(secured, faust.SASLCredentials)
    assert plain.mechanism == secured.mechanism == SASLMechanism(mechanism)
    assert (plain.protocol, plain.ssl_context) == (AuthProtocol.SASL_PLAINTEXT, None)
    assert secured.protocol == AuthProtocol.SASL_SSL and isinstance(secured.ssl_context, ssl.SSLContext)
    assert (secured.username, secured.password) == ("worker", PASSWORD)


def test_faust_gets_ssl_credentials_or_none() -> None:
    credentials = faust_credentials(settings("SSL"))
    assert isinstance(credentials, faust.SSLCredentials) and credentials.protocol == AuthProtocol.SSL
    assert faust_credentials(settings("PLAINTEXT")) is None
    app = faust.App("kafka-security-test", broker="kafka://127.0.0.1:9",
                    broker_credentials=faust_credentials(settings("SASL_SSL")))
    assert app.conf.broker_credentials.mechanism == SASLMechanism.SCRAM_SHA_512


def test_the_password_is_never_in_a_repr_or_str() -> None:
    s = settings("SASL_SSL")
    shown = [repr(s), str(s), repr(kafka_python_options(s)), str(aiokafka_options(s)), repr(faust_credentials(s)),
             str(faust_credentials(s))]
    assert not [text for text in shown if PASSWORD in text]


def test_tls_verifies_the_broker_by_default_and_the_host_name_may_be_relaxed() -> None:
    strict = ssl_context(settings("SSL"))
    relaxed = ssl_context(settings("SSL", kafka_check_hostname=False))
    assert strict is not None and relaxed is not None
    assert (strict.verify_mode, strict.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert (relaxed.verify_mode, relaxed.check_hostname) == (ssl.CERT_REQUIRED, False)
    assert ssl_context(settings("SASL_PLAINTEXT")) is None


def test_a_file_that_is_not_pem_fails_when_the_context_is_made(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate")
    with pytest.raises(ssl.SSLError):
        ssl_context(settings("SSL", kafka_ca_file=bogus))
