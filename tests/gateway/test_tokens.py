"""Device tokens: random, well-formed, verified in constant time, never shown by repr."""

from __future__ import annotations

import hashlib

from hypothesis import given, strategies as st

from gateway.tokens import TOKEN_PATTERN, bearer_token, digest, issue_token, matches, token_id


def test_tokens_are_distinct_and_well_formed() -> None:
    issued = [issue_token() for _ in range(200)]
    assert len({i.token for i in issued}) == len({i.token_id for i in issued}) == 200
    for i in issued:
        assert TOKEN_PATTERN.fullmatch(i.token)
        assert token_id(i.token) == i.token_id
        assert i.digest == hashlib.sha256(i.token.encode()).digest()
        assert matches(i.token, i.digest)


def test_the_secret_part_carries_256_bits() -> None:
    secret = issue_token().token.rsplit(".", 1)[1]
    assert len(secret) == 43  # ceil(256 / 6) base64url characters, no padding


def test_repr_never_shows_the_token() -> None:
    issued = issue_token()
    assert issued.token not in repr(issued) and issued.token.rsplit(".", 1)[1] not in str(issued)


@given(st.text(max_size=80))
def test_anything_that_is_not_a_token_has_no_id(text: str) -> None:
    if not TOKEN_PATTERN.fullmatch(text):
        assert token_id(text) is None


@given(st.integers(min_value=0, max_value=60), st.characters(codec="ascii"))
def test_a_token_with_one_character_changed_does_not_match(position: int, replacement: str) -> None:
    issued = issue_token()
    changed = issued.token[:position] + replacement + issued.token[position + 1:]
    assert matches(changed, issued.digest) == (changed == issued.token)


def test_digest_of_unpaired_surrogates_does_not_raise() -> None:
    assert len(digest("vrd1.\ud800")) == 32


def test_bearer_header_parsing() -> None:
    assert bearer_token("Bearer  abc  ") == "abc"
    assert bearer_token("BEARER abc") == "abc"
    for header in (None, "", "Bearer", "Bearer ", "Token abc", "abc"):
        assert bearer_token(header) is None
