"""A secured broker's ``server.properties`` lines and its SCRAM users, as pure functions.

Both the local secured broker (:mod:`infra.kafka`, PKCS#12 stores made with ``keytool``) and the
Compose broker (:mod:`infra.compose`, PEM files made with ``trustme``) are configured by
:func:`secured_properties`, and get their first SCRAM users from :func:`scram_format_args`: one
configuration, run for real by the local broker and by the tests, whichever way it is deployed.

Examples
--------
>>> scram_format_args({"admin": "pw"}, ("SCRAM-SHA-512",))
['--add-scram', 'SCRAM-SHA-512=[name=admin,password=pw]']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from infra.kafka_acls import ADMIN

#: The SCRAM mechanisms a secured broker offers; the first is the one its own (inter-broker) login uses.
SCRAM_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")


@dataclass(frozen=True, slots=True)
class BrokerTLS:
    """The broker's key store (its key and certificate chain) and trust store (the CA), and their type.

    ``PKCS12`` stores have a ``password``; ``PEM`` files have none (Kafka takes a PEM key store's
    private key unencrypted, PKCS#8, followed by its certificate chain, in one file).
    """

    keystore: Path
    truststore: Path
    store_type: Literal["PKCS12", "PEM"]
    password: str | None = None

    def properties(self) -> dict[str, str]:
        """The ``ssl.*`` lines of these stores.

        >>> BrokerTLS(Path("/c/k.pem"), Path("/c/ca.pem"), "PEM").properties()["ssl.truststore.type"]
        'PEM'
        """
        lines = {"ssl.keystore.type": self.store_type, "ssl.keystore.location": str(self.keystore),
                 "ssl.truststore.type": self.store_type, "ssl.truststore.location": str(self.truststore)}
        if self.store_type == "PKCS12":
            if not self.password:
                raise ValueError("a PKCS12 key store needs its password")
            lines |= {"ssl.keystore.password": self.password, "ssl.key.password": self.password,
                      "ssl.truststore.password": self.password}
        elif self.password is not None:
            raise ValueError("Kafka takes no password for PEM stores (the key is unencrypted PKCS#8)")
        return lines


def secured_properties(*, listen: str, advertise: str, controller: str, admin_password: str, tls: BrokerTLS,
                       broker_principal: str) -> dict[str, str]:
    """The listeners, TLS, SASL and authorizer lines of a secured broker.

    Parameters
    ----------
    listen
        ``host:port`` the SASL_SSL client listener binds (``:9092``: every interface).
    advertise
        ``host:port`` clients are told to connect to; the broker's certificate must name the host.
    controller
        ``host:port`` of the KRaft controller listener: TLS, and only a client holding the broker's
        own key (``broker_principal``, mutual TLS) gets in.
    admin_password
        The super user's SCRAM password: the broker's own login on its inter-broker listener.
    broker_principal
        ``User:<subject DN>`` of the broker's certificate, as Kafka's default mapping names it.

    Examples
    --------
    >>> tls = BrokerTLS(Path("/c/k.pem"), Path("/c/ca.pem"), "PEM")
    >>> p = secured_properties(listen=":9092", advertise="kafka:9092", controller="127.0.0.1:9093",
    ...                        admin_password="pw", tls=tls, broker_principal="User:CN=kafka")
    >>> p["listeners"], p["listener.security.protocol.map"]
    ('SASL_SSL://:9092,CONTROLLER://127.0.0.1:9093', 'CONTROLLER:SSL,SASL_SSL:SASL_SSL')
    >>> p["super.users"]
    'User:admin;User:CN=kafka'
    """
    login = (f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{ADMIN}" '
             f'password="{admin_password}";')
    return {
        "listeners": f"SASL_SSL://{listen},CONTROLLER://{controller}",
        "advertised.listeners": f"SASL_SSL://{advertise}",
        "inter.broker.listener.name": "SASL_SSL",
        "listener.security.protocol.map": "CONTROLLER:SSL,SASL_SSL:SASL_SSL",
        "sasl.enabled.mechanisms": ",".join(SCRAM_MECHANISMS),
        "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISMS[0],
        **{f"listener.name.sasl_ssl.{m.lower()}.sasl.jaas.config": login for m in SCRAM_MECHANISMS},
        **tls.properties(),
        "ssl.client.auth": "none",
        # the controller listener: TLS, and only a client holding the broker's key gets in
        "listener.name.controller.ssl.client.auth": "required",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{ADMIN};{broker_principal}",
        "allow.everyone.if.no.acl.found": "false",
        "auto.create.topics.enable": "false",
    }


def scram_format_args(passwords: Mapping[str, str], mechanisms: Sequence[str] = SCRAM_MECHANISMS) -> list[str]:
    """``kafka-storage format`` arguments creating a SCRAM user per ``name: password``, for each mechanism.

    A KRaft broker's SCRAM users are metadata: its first ones are made when the storage is formatted.
    """
    for name, password in passwords.items():
        if not name or any(c in name + password for c in ",=[]\n"):
            raise ValueError(f"the SCRAM user {name!r} or its password holds one of , = [ ] or a newline, "
                             "which kafka-storage cannot read; use letters, digits and -._~")
    return [arg for name, password in passwords.items() for mechanism in mechanisms
            for arg in ("--add-scram", f"{mechanism}=[name={name},password={password}]")]


def properties_text(lines: Mapping[str, str]) -> str:
    """``server.properties`` text: one ``key=value`` per line.

    >>> properties_text({"node.id": "1", "log.dirs": "/d"})
    'node.id=1\\nlog.dirs=/d\\n'
    """
    return "".join(f"{key}={value}\n" for key, value in lines.items())
