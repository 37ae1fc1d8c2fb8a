"""Throwaway TLS material for the secured local broker, made with the JDK's ``keytool``.

The broker needs Java anyway, and ``keytool`` comes with it, so no Python library is added for
this. :func:`make_ca` makes a certificate authority (its certificate as PEM, the one file a
client needs: ``VITALS_KAFKA_CA_FILE``); :func:`make_broker_keystore` a PKCS#12 keystore holding
a broker key and a certificate the CA signed for ``127.0.0.1`` and ``localhost``, and a
truststore holding the CA. Both certificates live 30 days: this is for a local broker made at
start, never for a real one.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from infra.errors import ServiceFailed, ToolMissing

logger = logging.getLogger(__name__)

#: Days the throwaway certificates are valid.
VALID_DAYS = 30
#: Subject of the broker's certificate; the controller listener knows the broker by it (mutual TLS).
BROKER_DN = "CN=vitalrisk-broker,O=vitalrisk local"
#: The broker's principal on the controller listener, as Kafka's default mapping names it.
BROKER_PRINCIPAL = "User:" + BROKER_DN


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """A CA under ``folder``: its PKCS#12 store (private key) and its certificate as PEM."""

    folder: Path
    password: str

    @property
    def store(self) -> Path:
        return self.folder / "ca.p12"

    @property
    def pem(self) -> Path:
        return self.folder / "ca.pem"


@dataclass(frozen=True, slots=True)
class BrokerStores:
    """The broker's keystore (key + certificate chain) and truststore (the CA), PKCS#12, one password."""

    keystore: Path
    truststore: Path
    password: str


def make_ca(folder: Path, *, name: str = "vitalrisk local CA") -> CertificateAuthority:
    """A new certificate authority in ``folder`` (created with mode 0700).

    Raises
    ------
    ToolMissing
        If ``keytool`` (the JDK's) is not installed.
    ServiceFailed
        If ``keytool`` fails.
    """
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca = CertificateAuthority(folder, secrets.token_urlsafe(18))
    for path in (ca.store, ca.pem):
        path.unlink(missing_ok=True)
    _keytool("-genkeypair", "-alias", "ca", "-keyalg", "RSA", "-keysize", "2048", "-dname", f"CN={name}",
             "-ext", "bc:c", "-ext", "KU=keyCertSign,cRLSign", "-validity", str(VALID_DAYS),
             *_store(ca.store, ca.password))
    _keytool("-exportcert", "-rfc", "-alias", "ca", "-file", str(ca.pem), *_store(ca.store, ca.password))
    ca.store.chmod(0o600)
    return ca


def make_broker_keystore(ca: CertificateAuthority, folder: Path) -> BrokerStores:
    """A broker key and a certificate ``ca`` signs for 127.0.0.1 and localhost, and a truststore of ``ca``.

    The certificate serves both ends: the broker's listeners, and the broker as a client of its
    own controller listener, which asks for a certificate (mutual TLS).
    """
    stores = BrokerStores(folder / "broker.p12", folder / "truststore.p12", secrets.token_urlsafe(18))
    request, signed = folder / "broker.csr", folder / "broker.pem"
    for path in (stores.keystore, stores.truststore, request, signed):
        path.unlink(missing_ok=True)
    keystore = _store(stores.keystore, stores.password)
    _keytool("-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048", "-dname", BROKER_DN,
             "-validity", str(VALID_DAYS), *keystore)
    _keytool("-certreq", "-alias", "broker", "-file", str(request), *keystore)
    _keytool("-gencert", "-alias", "ca", "-infile", str(request), "-outfile", str(signed), "-rfc",
             "-ext", "SAN=ip:127.0.0.1,dns:localhost", "-ext", "KU=digitalSignature,keyEncipherment",
             "-ext", "EKU=serverAuth,clientAuth", "-validity", str(VALID_DAYS), *_store(ca.store, ca.password))
    _keytool("-importcert", "-noprompt", "-alias", "ca", "-file", str(ca.pem), *keystore)
    _keytool("-importcert", "-noprompt", "-alias", "broker", "-file", str(signed), *keystore)
    _keytool("-importcert", "-noprompt", "-alias", "ca", "-file", str(ca.pem),
             *_store(stores.truststore, stores.password))
    request.unlink()
    signed.unlink()
    for path in (stores.keystore, stores.truststore):
        path.chmod(0o600)
    return stores


def _store(path: Path, password: str) -> list[str]:
    return ["-keystore", str(path), "-storetype", "PKCS12", "-storepass", password]


def _keytool(*args: str) -> None:
    keytool = shutil.which("keytool")
    if keytool is None:
        raise ToolMissing("keytool is not installed; the secured Kafka broker makes its certificates with the JDK's")
    done = subprocess.run([keytool, *args], capture_output=True, text=True)
    if done.returncode != 0:
        # keytool's arguments hold store passwords: only its output is reported
        raise ServiceFailed(f"keytool {args[0]} failed: {(done.stderr or done.stdout).strip()}")
