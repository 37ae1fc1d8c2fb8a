"""Throwaway TLS material for the tests of servers that speak HTTPS: a ``trustme`` CA and a leaf for 127.0.0.1."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class ServerFiles:
    """A CA's certificate, and a server certificate chain and key it issued, as PEM files."""

    ca: Path
    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        """A client's context trusting only this CA (host name checked)."""
        return ssl.create_default_context(cafile=str(self.ca))


def server_files(folder: Path, *hosts: str, name: str = "server") -> ServerFiles:
    """A new CA under ``folder`` and a certificate for ``hosts`` (default ``127.0.0.1``, ``localhost``)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    leaf = ca.issue_cert(*(hosts or ("127.0.0.1", "localhost")))
    files = ServerFiles(folder / f"{name}-ca.pem", folder / f"{name}.crt", folder / f"{name}.key")
    ca.cert_pem.write_to_path(str(files.ca))
    leaf.private_key_pem.write_to_path(str(files.key))
    files.cert.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    return files
