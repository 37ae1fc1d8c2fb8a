"""The Kafka security settings as each client library's options: kafka-python, aiokafka, Faust.

Every Kafka client in the project is built with these, so one set of ``VITALS_KAFKA_*`` settings
secures every process alike (docs/configuration.md, "Kafka security"). TLS is one
:class:`ssl.SSLContext` for all three libraries, made by :func:`ssl_context`: the system's CAs or
``kafka_ca_file``, hostname verification unless ``kafka_check_hostname`` is false, and the client
certificate when one is set. The SASL password leaves its :class:`~pydantic.SecretStr` only here,
into a :class:`ClientOptions` mapping whose ``repr`` masks it.

Examples
--------
>>> from kernel.settings import Settings
>>> kafka_python_options(Settings())
{'security_protocol': 'PLAINTEXT'}
>>> s = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_username="worker", kafka_password="s3cret")
>>> options = aiokafka_options(s)
>>> options
{'security_protocol': 'SASL_PLAINTEXT', 'sasl_mechanism': 'SCRAM-SHA-512', 'sasl_plain_username': 'worker', 'sasl_plain_password': '**********'}
>>> options["sasl_plain_password"]
's3cret'
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from kernel.settings import Settings

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

#: The option names whose values are secrets: masked in a :class:`ClientOptions` repr.
SECRET_OPTIONS = frozenset({"sasl_plain_password"})


class ClientOptions(dict[str, object]):
    """Keyword arguments for a Kafka client's constructor; its ``repr`` and ``str`` mask the password.

    >>> ClientOptions(sasl_plain_password="pw", security_protocol="SASL_SSL")
    {'sasl_plain_password': '**********', 'security_protocol': 'SASL_SSL'}
    """

    def __repr__(self) -> str:
        return repr({k: "**********" if k in SECRET_OPTIONS else v for k, v in self.items()})

    __str__ = __repr__


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of ``settings``, or ``None`` when the protocol uses no TLS.

    The broker's certificate must chain to ``kafka_ca_file`` (the system's CAs when unset) and,
    unless ``kafka_check_hostname`` is false, name the host connected to.

    Raises
    ------
    ssl.SSLError
        If a file is not PEM of the kind it should hold (the settings checked that it exists).

    >>> ssl_context(Settings()) is None
    True
    >>> ssl_context(Settings(kafka_security_protocol="SSL")).check_hostname
    True
    """
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=None if settings.kafka_ca_file is None else str(settings.kafka_ca_file))
    context.check_hostname = settings.kafka_check_hostname
    if settings.kafka_cert_file is not None:
        context.load_cert_chain(str(settings.kafka_cert_file),
                                None if settings.kafka_key_file is None else str(settings.kafka_key_file))
    return context


def aiokafka_options(settings: Settings) -> ClientOptions:
    """Keyword arguments of aiokafka's clients (``AIOKafkaConsumer``, ``AIOKafkaProducer``, ``AIOKafkaClient``).

    >>> aiokafka_options(Settings(kafka_security_protocol="SSL"))["ssl_context"].verify_mode.name
    'CERT_REQUIRED'
    """
    options = ClientOptions(security_protocol=settings.kafka_security_protocol)
    if settings.kafka_security_protocol.startswith("SASL_"):
        username, password = _sasl_login(settings)
        options.update(sasl_mechanism=settings.kafka_sasl_mechanism, sasl_plain_username=username,
                       sasl_plain_password=password)
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    return options


def kafka_python_options(settings: Settings) -> ClientOptions:
    """Keyword arguments of kafka-python's clients (``KafkaProducer``, ``KafkaConsumer``, ``KafkaAdminClient``).

    The same names as aiokafka's: kafka-python takes SCRAM's username and password as
    ``sasl_plain_*`` too, and an ``ssl_context`` in place of its ``ssl_cafile``/``ssl_certfile``/
    ``ssl_keyfile``/``ssl_check_hostname``, so that both libraries verify the broker alike.

    >>> sorted(kafka_python_options(Settings(kafka_security_protocol="SSL")))
    ['security_protocol', 'ssl_context']
    """
    return aiokafka_options(settings)


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """Faust's ``broker_credentials`` for ``settings``: ``None`` for PLAINTEXT.

    Faust hands them to aiokafka for every client it makes (consumer, producer, the admin
    requests that create its changelog and repartition topics).

    >>> faust_credentials(Settings()) is None
    True
    >>> faust_credentials(Settings(kafka_security_protocol="SASL_SSL", kafka_username="worker", kafka_password="pw"))
    <SASLCredentials: username=worker>
    """
    # Imported here: Faust costs ~0.4 s to import and only the two Faust apps need it.
    from faust.auth import SASLCredentials, SSLCredentials

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = ssl_context(settings)
    if protocol == "SSL":
        return SSLCredentials(context)
    username, password = _sasl_login(settings)
    return SASLCredentials(
        username=username, password=password, ssl_context=context, mechanism=settings.kafka_sasl_mechanism)


def _sasl_login(settings: Settings) -> tuple[str, str]:
    """The SASL username and password (validated settings always have both when SASL is on)."""
    if settings.kafka_username is None or settings.kafka_password is None:
        raise ValueError(f"VITALS_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} needs "
                         "VITALS_KAFKA_USERNAME and VITALS_KAFKA_PASSWORD")
    return settings.kafka_username, settings.kafka_password.get_secret_value()
