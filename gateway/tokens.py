"""Device tokens: 256 random bits, shown once, stored only as a SHA-256 digest.

A token reads ``vrd1.<token id>.<secret>``: ``vrd1`` names the scheme, the token id is 12 hex
digits (48 random bits, public, the lookup key in the device table) and the secret is 43
characters of URL-safe base64 (256 random bits from :mod:`secrets`). The device table keeps
the token id and the SHA-256 of the whole token, never the token; the gateway hashes what a
device presents and compares the digests in constant time (:func:`matches`).

Why a plain SHA-256 and not a slow KDF (bcrypt, scrypt, Argon2): a slow hash protects *guessable*
secrets, such as passwords, from a brute force over the stolen table. A 256-bit random secret
cannot be guessed whatever the hash costs, so the cost would buy nothing and would be paid on
every upload. Why not a signed JWT: the gateway would need a signing key to keep and rotate,
and revoking one device before its JWT expires needs a list of revoked tokens checked on every
request anyway, so a lookup per token (cached for seconds) is simpler and revokes at once.

Examples
--------
>>> issued = issue_token()
>>> issued.token.startswith("vrd1." + issued.token_id + ".")
True
>>> len(issued.token), len(issued.digest)
(61, 32)
>>> token_id(issued.token) == issued.token_id
True
>>> matches(issued.token, issued.digest), matches(issued.token[:-1] + "x", issued.digest)
(True, False)
>>> token_id("Bearer something"), token_id("vrd1.0123456789ab.short")
(None, None)
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

#: The scheme tag every token starts with (a new scheme would be ``vrd2``).
SCHEME = "vrd1"
#: Random bytes of the secret part: 256 bits.
SECRET_BYTES = 32
#: Random bytes of the public token id: 48 bits, 12 hex digits.
TOKEN_ID_BYTES = 6
#: What a well-formed token looks like; anything else is refused before any lookup.
TOKEN_PATTERN = re.compile(rf"{SCHEME}\.([0-9a-f]{{{2 * TOKEN_ID_BYTES}}})\.[A-Za-z0-9_-]{{43}}")


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A new token: the text to hand to the device once, its public id and the digest to store.

    ``repr`` shows the id only, so a token printed by mistake in a log line stays secret.

    >>> IssuedToken("vrd1.0123456789ab.secret", "0123456789ab", b"")
    IssuedToken(token_id='0123456789ab')
    """

    token: str
    token_id: str
    digest: bytes

    def __repr__(self) -> str:
        return f"IssuedToken(token_id={self.token_id!r})"


def issue_token() -> IssuedToken:
    """A fresh random token (:mod:`secrets`), its id and its SHA-256 digest."""
    ident = secrets.token_hex(TOKEN_ID_BYTES)
    token = f"{SCHEME}.{ident}.{secrets.token_urlsafe(SECRET_BYTES)}"
    return IssuedToken(token, ident, digest(token))


def digest(token: str) -> bytes:
    """SHA-256 of the token's text, as the device table stores it.

    >>> digest("vrd1.x.y").hex()[:16]
    'ed65f66578b02e9a'
    """
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def token_id(token: str) -> str | None:
    """The public id of a well-formed token, ``None`` for anything else (no lookup is made)."""
    match = TOKEN_PATTERN.fullmatch(token)
    return match.group(1) if match else None


def matches(token: str, stored: bytes) -> bool:
    """Whether ``token`` hashes to the ``stored`` digest; compared in constant time."""
    return hmac.compare_digest(digest(token), stored)


def bearer_token(authorization: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer <token>`` header, ``None`` if there is none.

    >>> bearer_token("Bearer vrd1.abc"), bearer_token("bearer  vrd1.abc "), bearer_token("Basic eDp5"), bearer_token(None)
    ('vrd1.abc', 'vrd1.abc', None, None)
    """
    if not authorization:
        return None
    scheme, _, credential = authorization.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        return None
    return credential
