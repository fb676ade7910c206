"""Tests of the prebooking token: HMAC-SHA256 over `{prebooking_id}:{execute_at_ms}`."""

from __future__ import annotations

import hashlib
import hmac
import string
import uuid

import pytest

from prebook_common.errors import TokenError
from prebook_common.token import make_token, verify_token

SECRET = "token-secret-for-tests-0123456789abcdef"
PREBOOKING_ID = uuid.UUID("6f1c2b9e-4a55-4c1e-9d39-0b2f6f0c8a11")
EXECUTE_AT_MS = 1_767_225_600_000


def test_token_is_lowercase_hex() -> None:
    token = make_token(SECRET, PREBOOKING_ID, EXECUTE_AT_MS)

    assert len(token) == 64
    assert set(token) <= set(string.digits + "abcdef")


def test_token_is_hmac_sha256_of_id_and_instant() -> None:
    message = f"{PREBOOKING_ID}:{EXECUTE_AT_MS}".encode()
    expected = hmac.new(SECRET.encode(), message, hashlib.sha256).hexdigest()

    assert make_token(SECRET, PREBOOKING_ID, EXECUTE_AT_MS) == expected


def test_token_same_for_uuid_and_string_id() -> None:
    from_uuid = make_token(SECRET, PREBOOKING_ID, EXECUTE_AT_MS)
    from_string = make_token(SECRET, str(PREBOOKING_ID), EXECUTE_AT_MS)

    assert from_uuid == from_string


def test_valid_token_verifies() -> None:
    token = make_token(SECRET, PREBOOKING_ID, EXECUTE_AT_MS)

    # verify_token returns None and raises on a mismatch, so reaching the end passes.
    assert verify_token(SECRET, PREBOOKING_ID, EXECUTE_AT_MS, token) is None


def test_token_rejects_other_execute_at() -> None:
    token = make_token(SECRET, PREBOOKING_ID, EXECUTE_AT_MS)

    with pytest.raises(TokenError):
        verify_token(SECRET, PREBOOKING_ID, EXECUTE_AT_MS + 1, token)


def test_token_rejects_other_id() -> None:
    token = make_token(SECRET, PREBOOKING_ID, EXECUTE_AT_MS)
    other_id = uuid.UUID("6f1c2b9e-4a55-4c1e-9d39-0b2f6f0c8a12")

    with pytest.raises(TokenError):
        verify_token(SECRET, other_id, EXECUTE_AT_MS, token)


def test_token_rejects_other_secret() -> None:
    token = make_token("another-secret-0123456789abcdef", PREBOOKING_ID, EXECUTE_AT_MS)

    with pytest.raises(TokenError):
        verify_token(SECRET, PREBOOKING_ID, EXECUTE_AT_MS, token)


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda token: token[:-1], id="truncated"),
        pytest.param(lambda token: token[:32], id="half"),
        pytest.param(lambda token: "", id="empty"),
        pytest.param(lambda token: token[:-1] + "g", id="non-hex-last"),
        pytest.param(lambda token: "z" * 64, id="non-hex"),
        pytest.param(lambda token: token + "0", id="extra-char"),
        pytest.param(lambda token: token[:-1] + "\u00e9", id="non-ascii"),
    ],
)
def test_token_rejects_edited_token(edit) -> None:
    token = make_token(SECRET, PREBOOKING_ID, EXECUTE_AT_MS)

    with pytest.raises(TokenError):
        verify_token(SECRET, PREBOOKING_ID, EXECUTE_AT_MS, edit(token))


def test_token_error_names_prebooking() -> None:
    with pytest.raises(TokenError) as caught:
        verify_token(SECRET, PREBOOKING_ID, EXECUTE_AT_MS, "0" * 64)

    message = str(caught.value)
    assert str(PREBOOKING_ID) in message
    assert str(EXECUTE_AT_MS) in message
    assert SECRET not in message
