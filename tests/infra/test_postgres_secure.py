"""The secured local cluster's pure parts: SCRAM verifiers, the passfile, the URLs clients get (no server)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from infra.postgres import LocalPostgres, read_passfile, scram_verifier
from kernel.settings import Settings


def test_a_scram_verifier_is_what_the_server_checks_a_client_proof_against() -> None:
    salt = b"\x01" * 16
    verifier = scram_verifier("correct horse", salt=salt)
    method, rest = verifier.split("$", 1)
    header, keys = rest.split("$")
    iterations, salt_b64 = header.split(":")
    stored_key, server_key = (base64.b64decode(k) for k in keys.split(":"))
    assert (method, iterations, base64.b64decode(salt_b64)) == ("SCRAM-SHA-256", "4096", salt)
    # A client proves it knows the password: ClientKey = proof XOR signature, and H(ClientKey) must be StoredKey.
    salted = hashlib.pbkdf2_hmac("sha256", b"correct horse", salt, 4096)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    assert hashlib.sha256(client_key).digest() == stored_key
    assert hmac.digest(salted, b"Server Key", "sha256") == server_key
    assert "correct horse" not in verifier and scram_verifier("correct horse", salt=b"\x02" * 16) != verifier
    with pytest.raises(ValueError, match="ASCII"):
        scram_verifier("pässword", salt=salt)


def test_the_passfile_is_read_back_by_role(tmp_path: Path) -> None:
    passfile = tmp_path / "passfile"
    passfile.write_text("127.0.0.1:1:*:a:x1\nlocalhost:1:*:a:x1\n127.0.0.1:1:*:b:y2\n#127.0.0.1:1:*:c:z\n")
    assert read_passfile(passfile) == {"a": "x1", "b": "y2"}


def test_a_secured_clusters_urls_name_the_ca_and_the_passfile_and_no_password(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "a folder", database_url="postgresql://127.0.0.1:15999/vitalrisk")
    cluster = LocalPostgres(settings, secure=True, timescale=False)
    parts = conninfo_to_dict(cluster.url("vitalrisk_worker"))
    assert parts == {"user": "vitalrisk_worker", "host": "127.0.0.1", "port": "15999", "dbname": "vitalrisk",
                     "sslmode": "verify-full", "sslrootcert": str(cluster.ca_file), "passfile": str(cluster.passfile)}
    assert "user" not in conninfo_to_dict(cluster.url(None))  # each service fills in its own role
    assert cluster.superuser_url == cluster.url("postgres")
    assert LocalPostgres(settings, timescale=False).secure is False, "a cluster never started secured is plain"
