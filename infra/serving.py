"""Serve an aiohttp application on ``host:port``: HTTPS when the settings name a certificate and key.

The ingest gateway (:mod:`gateway.app`) and the alerter's API (:mod:`stream.alerts.api`) both
listen through :func:`start_site`, described by a :class:`Listener` built from their settings
(:func:`gateway_listener`, :func:`alerter_listener`):

- **TLS** (:func:`server_tls`): the certificate chain and key files, both or neither
  (``VITALS_GATEWAY_TLS_CERT_FILE`` and ``VITALS_GATEWAY_TLS_KEY_FILE``, the alerter's likewise),
  loaded into :func:`ssl.create_default_context` for client connections: TLS 1.2 or later, the
  standard library's cipher choice, no client certificate asked for. A file that is missing,
  unreadable or not PEM, or a key that is not the certificate's, is one line naming the setting.
- **Exposure** (:func:`check_exposure`): a server that would listen beyond the loopback address
  without TLS is refused unless its ``..._ALLOW_PLAINTEXT`` setting says a TLS-terminating proxy
  stands in front: device tokens and the API's bearer token travel in a header.

Certificates are read once, at start: to rotate one, replace the files and restart the service.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from kernel.errors import ConfigurationError, listen_failed
from kernel.settings import Settings

#: The oldest TLS version a vitalrisk server accepts.
MIN_TLS_VERSION = ssl.TLSVersion.TLSv1_2


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this machine only.

    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


@dataclass(frozen=True, slots=True)
class Listener:
    """Where and how one HTTP server listens; ``service`` names its settings (``gateway``: ``VITALS_GATEWAY_*``).

    >>> Listener("the gateway", "gateway", "127.0.0.1", 8088).url
    'http://127.0.0.1:8088'
    >>> Listener("the gateway", "gateway", "::1", 8443, Path("c.pem"), Path("k.pem")).url
    'https://[::1]:8443'
    """

    what: str
    service: str
    host: str
    port: int
    cert_file: Path | None = None
    key_file: Path | None = None
    allow_plaintext: bool = False

    @property
    def prefix(self) -> str:
        """The prefix of the server's variables."""
        return f"VITALS_{self.service.upper()}"

    @property
    def tls(self) -> bool:
        return self.cert_file is not None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def gateway_listener(settings: Settings) -> Listener:
    """The ingest gateway's listener (``VITALS_GATEWAY_HOST``, ``_PORT``, ``_TLS_CERT_FILE``, ...)."""
    return Listener("the gateway", "gateway", settings.gateway_host, settings.gateway_port,
                    settings.gateway_tls_cert_file, settings.gateway_tls_key_file, settings.gateway_allow_plaintext)


def alerter_listener(settings: Settings) -> Listener:
    """The alerter API's listener (``VITALS_ALERTER_HOST``, ``_PORT``, ``_TLS_CERT_FILE``, ...)."""
    return Listener("the alerter API", "alerter", settings.alerter_host, settings.alerter_port,
                    settings.alerter_tls_cert_file, settings.alerter_tls_key_file, settings.alerter_allow_plaintext)


def check_exposure(listener: Listener) -> None:
    """Refuse plain HTTP beyond the loopback address unless ``allow_plaintext`` says a proxy terminates TLS.

    >>> check_exposure(Listener("the gateway", "gateway", "127.0.0.1", 8088))
    >>> check_exposure(Listener("the gateway", "gateway", "0.0.0.0", 8088))
    Traceback (most recent call last):
    ...
    kernel.errors.ConfigurationError: the gateway would serve plain HTTP on 0.0.0.0: set VITALS_GATEWAY_TLS_CERT_FILE and VITALS_GATEWAY_TLS_KEY_FILE, listen on 127.0.0.1, or set VITALS_GATEWAY_ALLOW_PLAINTEXT=true behind a TLS-terminating proxy

    Raises
    ------
    ConfigurationError
        The host is not a loopback address, no certificate is set and plaintext is not allowed.
    """
    if not listener.tls and not listener.allow_plaintext and not is_loopback(listener.host):
        p = listener.prefix
        raise ConfigurationError(
            f"{listener.what} would serve plain HTTP on {listener.host}: set {p}_TLS_CERT_FILE and {p}_TLS_KEY_FILE, "
            f"listen on 127.0.0.1, or set {p}_ALLOW_PLAINTEXT=true behind a TLS-terminating proxy")


def server_tls(listener: Listener) -> ssl.SSLContext | None:
    """The server's TLS context from its certificate chain and key; ``None`` for plain HTTP.

    Raises
    ------
    ConfigurationError
        Only one of the two files is set, one cannot be read or is not PEM, or the key is not the
        certificate's. The message names the setting and the file, never the key's content.
    """
    if listener.cert_file is None and listener.key_file is None:
        return None
    p = listener.prefix
    if listener.cert_file is None or listener.key_file is None:
        given, missing = ("CERT", "KEY") if listener.key_file is None else ("KEY", "CERT")
        raise ConfigurationError(f"{p}_TLS_{given}_FILE needs {p}_TLS_{missing}_FILE: set both (HTTPS) or neither")
    for kind, path in (("CERT", listener.cert_file), ("KEY", listener.key_file)):
        try:
            with path.open("rb") as handle:
                handle.read(1)
        except OSError as exc:
            raise ConfigurationError(f"cannot read {p}_TLS_{kind}_FILE={path}: {exc.strerror or exc}") from None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = MIN_TLS_VERSION
    try:
        context.load_cert_chain(listener.cert_file, listener.key_file)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigurationError(f"{p}_TLS_KEY_FILE={listener.key_file} is not the key of the certificate in "
                                     f"{p}_TLS_CERT_FILE={listener.cert_file}") from None
        raise ConfigurationError(f"{p}_TLS_CERT_FILE={listener.cert_file} and {p}_TLS_KEY_FILE={listener.key_file} "
                                 f"are not a PEM certificate chain and its unencrypted private key "
                                 f"({exc.reason or exc.library or 'unreadable'})") from None
    return context


def prepare(listener: Listener) -> ssl.SSLContext | None:
    """:func:`check_exposure`, then :func:`server_tls`: what a service checks before it starts anything."""
    check_exposure(listener)
    return server_tls(listener)


async def start_site(runner: web.AppRunner, listener: Listener, tls: ssl.SSLContext | None) -> None:
    """Listen on ``listener``'s address with ``runner`` (set up), over ``tls`` if given.

    Raises
    ------
    PortInUse, ConfigurationError
        The address cannot be bound (:func:`kernel.errors.listen_failed`).
    """
    try:
        await web.TCPSite(runner, listener.host, listener.port, ssl_context=tls).start()
    except OSError as exc:
        raise listen_failed(exc, what=listener.what, host=listener.host, port=listener.port,
                            setting=f"{listener.prefix}_PORT") from None
