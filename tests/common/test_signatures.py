"""Tests of QStash signing and of QStashVerifier, checked against the official qstash SDK."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
import qstash
import qstash.errors

from prebook_common.errors import SignatureError
from prebook_common.signatures import DEFAULT_TTL_S, ISSUER, QStashVerifier, body_hash, sign

CURRENT_KEY = "sig_current_key_for_tests_0123456789abcdef"
NEXT_KEY = "sig_next_key_for_tests_fedcba9876543210abcd"
OTHER_KEY = "sig_other_key_for_tests_00112233445566778899"
URL = "https://prebook.example.test/v1/qstash/prepare"
BODY = b'{"prebookingId":"6f1c2b9e-4a55-4c1e-9d39-0b2f6f0c8a11","executeAt":1767225600000}'
TOLERANCE_S = 5


@pytest.fixture
def verifier() -> QStashVerifier:
    return QStashVerifier(CURRENT_KEY, NEXT_KEY, URL, clock_tolerance_s=TOLERANCE_S)


def _base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**changes: object) -> dict[str, object]:
    """Claims as QStash writes them, issued now. A change to None drops that claim."""
    now_s = int(time.time())
    claims: dict[str, object] = {
        "iss": ISSUER,
        "sub": URL,
        "iat": now_s,
        "nbf": now_s,
        "exp": now_s + DEFAULT_TTL_S,
        "jti": "jwt_test",
        "body": body_hash(BODY),
    }
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def _encode(claims: dict[str, object], key: str = CURRENT_KEY, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def _rejection(verifier: QStashVerifier, signature: str | None, body: bytes = BODY) -> SignatureError:
    """Return the SignatureError that verify raises, after checking it reveals no key."""
    with pytest.raises(SignatureError) as caught:
        verifier.verify(signature, body)

    message = str(caught.value)
    for key in (CURRENT_KEY, NEXT_KEY, OTHER_KEY):
        assert key not in message
    return caught.value


# --- sign() against the official SDK ------------------------------------------------------


def test_sign_verifies_with_sdk_current_key() -> None:
    receiver = qstash.Receiver(current_signing_key=CURRENT_KEY, next_signing_key=NEXT_KEY)
    signature = sign(BODY, URL, CURRENT_KEY)

    # Receiver.verify returns None and raises qstash.errors.SignatureError on a mismatch.
    assert receiver.verify(signature=signature, body=BODY.decode(), url=URL) is None


def test_sign_verifies_with_sdk_next_key() -> None:
    receiver = qstash.Receiver(current_signing_key=CURRENT_KEY, next_signing_key=NEXT_KEY)
    signature = sign(BODY, URL, NEXT_KEY)

    assert receiver.verify(signature=signature, body=BODY.decode(), url=URL) is None


def test_sdk_rejects_edited_body() -> None:
    receiver = qstash.Receiver(current_signing_key=CURRENT_KEY, next_signing_key=NEXT_KEY)
    signature = sign(BODY, URL, CURRENT_KEY)

    with pytest.raises(qstash.errors.SignatureError):
        receiver.verify(signature=signature, body=BODY.decode() + " ", url=URL)


def test_sign_claims_match_qstash() -> None:
    now_s = 1_767_225_000
    signature = sign(BODY, URL, CURRENT_KEY, now_s=now_s)

    header = jwt.get_unverified_header(signature)
    claims = jwt.decode(signature, options={"verify_signature": False})
    assert header["alg"] == "HS256"
    assert claims["iss"] == "Upstash"
    assert claims["sub"] == URL
    assert claims["iat"] == now_s
    assert claims["nbf"] == now_s
    assert claims["exp"] == now_s + DEFAULT_TTL_S
    assert claims["jti"].startswith("jwt_")
    assert claims["body"] == body_hash(BODY)


def test_body_hash_is_padded_base64url() -> None:
    # SHA-256 digests are 32 bytes, which base64 writes as 43 characters and one "=".
    digest_b64 = body_hash(BODY)

    assert len(digest_b64) == 44
    assert digest_b64.endswith("=")
    assert "+" not in digest_b64
    assert "/" not in digest_b64


# --- QStashVerifier accepts ---------------------------------------------------------------


def test_verifier_accepts_current_key(verifier: QStashVerifier) -> None:
    claims = verifier.verify(sign(BODY, URL, CURRENT_KEY), BODY)

    assert claims.subject == URL
    assert claims.jwt_id is not None
    assert claims.jwt_id.startswith("jwt_")


def test_verifier_accepts_next_key(verifier: QStashVerifier) -> None:
    claims = verifier.verify(sign(BODY, URL, NEXT_KEY), BODY)

    assert claims.subject == URL


def test_verifier_returns_lifetime_claims(verifier: QStashVerifier) -> None:
    now_s = int(time.time())

    claims = verifier.verify(sign(BODY, URL, CURRENT_KEY, now_s=now_s, ttl_s=60), BODY)

    assert claims.issued_at == now_s
    assert claims.expires_at == now_s + 60


def test_verifier_without_next_key() -> None:
    single_key_verifier = QStashVerifier(CURRENT_KEY, "", URL)

    claims = single_key_verifier.verify(sign(BODY, URL, CURRENT_KEY), BODY)

    assert claims.subject == URL


def test_verifier_accepts_padded_body_hash(verifier: QStashVerifier) -> None:
    padded = body_hash(BODY)
    assert padded.endswith("=")

    claims = verifier.verify(_encode(_claims(body=padded)), BODY)

    assert claims.subject == URL


def test_verifier_accepts_unpadded_body_hash(verifier: QStashVerifier) -> None:
    unpadded = body_hash(BODY).rstrip("=")

    claims = verifier.verify(_encode(_claims(body=unpadded)), BODY)

    assert claims.subject == URL


def test_verifier_accepts_expiry_within_tolerance(verifier: QStashVerifier) -> None:
    # exp lies 2 s in the past, inside the 5 s clock tolerance.
    issued_at = time.time() - DEFAULT_TTL_S - 2

    claims = verifier.verify(sign(BODY, URL, CURRENT_KEY, now_s=issued_at), BODY)

    assert claims.subject == URL


# --- QStashVerifier rejects ---------------------------------------------------------------


@pytest.mark.parametrize("signature", [None, ""], ids=["none", "empty"])
def test_verifier_rejects_missing_header(verifier: QStashVerifier, signature: str | None) -> None:
    error = _rejection(verifier, signature)

    assert error.check == "missing"


@pytest.mark.parametrize(
    "signature",
    ["not-a-jwt", "a.b.c", "a.b", "....", "\u00e9.\u00e9.\u00e9"],
    ids=["no-dots", "garbage-segments", "two-segments", "empty-segments", "non-ascii"],
)
def test_verifier_rejects_malformed_jwt(verifier: QStashVerifier, signature: str) -> None:
    error = _rejection(verifier, signature)

    assert error.check == "malformed"


def test_verifier_rejects_alg_none(verifier: QStashVerifier) -> None:
    header = _base64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = _base64url(json.dumps(_claims()).encode())
    unsigned = f"{header}.{payload}."

    error = _rejection(verifier, unsigned)

    assert error.check == "algorithm"


# The HS512 token reuses the 42-byte test key, below PyJWT's advice of 64 bytes for SHA-512.
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_verifier_rejects_hs512(verifier: QStashVerifier) -> None:
    signature = _encode(_claims(), algorithm="HS512")

    error = _rejection(verifier, signature)

    assert error.check == "algorithm"


def test_verifier_rejects_wrong_key(verifier: QStashVerifier) -> None:
    error = _rejection(verifier, sign(BODY, URL, OTHER_KEY))

    assert error.check == "key"


def test_verifier_rejects_wrong_issuer(verifier: QStashVerifier) -> None:
    signature = _encode(_claims(iss="NotUpstash"))

    error = _rejection(verifier, signature)

    assert error.check == "issuer"


def test_verifier_rejects_wrong_subject(verifier: QStashVerifier) -> None:
    signature = sign(BODY, "https://other.example.test/v1/qstash/prepare", CURRENT_KEY)

    error = _rejection(verifier, signature)

    assert error.check == "subject"


def test_verifier_rejects_subject_with_slash(verifier: QStashVerifier) -> None:
    # The subject must be the exact URL, so a trailing slash is another URL.
    signature = sign(BODY, URL + "/", CURRENT_KEY)

    error = _rejection(verifier, signature)

    assert error.check == "subject"


def test_verifier_rejects_expired(verifier: QStashVerifier) -> None:
    # exp lies 60 s in the past, well beyond the 5 s clock tolerance.
    issued_at = time.time() - DEFAULT_TTL_S - TOLERANCE_S - 60

    error = _rejection(verifier, sign(BODY, URL, CURRENT_KEY, now_s=issued_at))

    assert error.check == "expired"


def test_verifier_rejects_future_nbf(verifier: QStashVerifier) -> None:
    not_before = int(time.time()) + TOLERANCE_S + 60
    signature = _encode(_claims(nbf=not_before))

    error = _rejection(verifier, signature)

    assert error.check == "not_yet_valid"


def test_verifier_rejects_future_iat(verifier: QStashVerifier) -> None:
    issued_at = time.time() + TOLERANCE_S + 60

    error = _rejection(verifier, sign(BODY, URL, CURRENT_KEY, now_s=issued_at))

    assert error.check == "not_yet_valid"


def test_verifier_rejects_edited_body(verifier: QStashVerifier) -> None:
    signature = sign(BODY, URL, CURRENT_KEY)
    edited = BODY.replace(b"1767225600000", b"1767225600001")

    error = _rejection(verifier, signature, edited)

    assert error.check == "body"


def test_verifier_rejects_missing_body_claim(verifier: QStashVerifier) -> None:
    signature = _encode(_claims(body=None))

    error = _rejection(verifier, signature)

    assert error.check == "body"


@pytest.mark.parametrize("claim", ["iss", "sub", "exp", "nbf"])
def test_verifier_rejects_missing_claim(verifier: QStashVerifier, claim: str) -> None:
    signature = _encode(_claims(**{claim: None}))

    error = _rejection(verifier, signature)

    assert error.check == "malformed"


def test_verifier_rejects_numeric_kid(verifier: QStashVerifier) -> None:
    header = _base64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": 1}).encode())
    payload = _base64url(json.dumps(_claims()).encode())
    signature = f"{header}.{payload}.{_base64url(b'not-a-signature')}"

    error = _rejection(verifier, signature)

    assert error.check == "malformed"
