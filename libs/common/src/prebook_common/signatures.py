"""QStash request signatures: signing (for the local delivery and tests) and verification.

QStash signs each delivery with an HS256 JWT in the ``Upstash-Signature`` header, using
the current or the next signing key. Its claims: ``iss`` is ``Upstash``, ``sub`` is the
exact destination URL of the message, ``exp``/``nbf``/``iat`` bound its lifetime, and
``body`` is the base64url SHA-256 of the raw body bytes, with ``=`` padding that some
implementations strip (so the comparison ignores it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
import warnings
from dataclasses import dataclass
from typing import Any

import jwt

from prebook_common.errors import SignatureError

ISSUER = "Upstash"
ALGORITHM = "HS256"
DEFAULT_TTL_S = 300

# QStash chooses the signing keys' length, so PyJWT's advice about short HMAC keys is
# not something a Prebook operator can act on.
warnings.filterwarnings("ignore", category=jwt.warnings.InsecureKeyLengthWarning)


def body_hash(body: bytes) -> str:
    """Base64url SHA-256 of ``body`` with padding, as QStash writes it."""
    return base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode()


def sign(body: bytes, url: str, key: str, *, now_s: float | None = None, ttl_s: int = DEFAULT_TTL_S) -> str:
    """Sign ``body`` for delivery to ``url`` the way QStash signs its requests."""
    issued_at = int(time.time() if now_s is None else now_s)
    claims = {
        "iss": ISSUER,
        "sub": url,
        "iat": issued_at,
        "nbf": issued_at,
        "exp": issued_at + ttl_s,
        "jti": f"jwt_{uuid.uuid4().hex}",
        "body": body_hash(body),
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


@dataclass(frozen=True)
class SignatureClaims:
    subject: str
    issued_at: int | None
    expires_at: int
    jwt_id: str | None


class QStashVerifier:
    """Verifies ``Upstash-Signature`` headers for one callback URL.

    Each failure raises SignatureError whose ``check`` names what failed: ``missing``,
    ``malformed``, ``algorithm``, ``key``, ``issuer``, ``subject``, ``expired``,
    ``not_yet_valid`` or ``body``.
    """

    def __init__(self, current_key: str, next_key: str, url: str, *, clock_tolerance_s: int = 5) -> None:
        self._keys = tuple(key for key in (current_key, next_key) if key)
        self._url = url
        self._leeway = clock_tolerance_s

    def verify(self, signature: str | None, body: bytes) -> SignatureClaims:
        if not signature:
            raise SignatureError("missing", "Upstash-Signature header is missing")

        claims = self._decode(signature)

        if claims.get("sub") != self._url:
            raise SignatureError(
                "subject",
                f"signature subject {claims.get('sub')!r} is not this callback URL {self._url!r}: "
                "set PREBOOK_PUBLIC_URL to the URL QStash calls",
            )

        signed_hash = claims.get("body")
        if not isinstance(signed_hash, str):
            raise SignatureError("body", "signature has no body hash claim")
        if not hmac.compare_digest(signed_hash.rstrip("="), body_hash(body).rstrip("=")):
            raise SignatureError("body", "body does not match the signed body hash: it was changed after signing")

        return SignatureClaims(
            subject=claims["sub"],
            issued_at=claims.get("iat"),
            expires_at=claims["exp"],
            jwt_id=claims.get("jti"),
        )

    def _decode(self, signature: str) -> dict[str, Any]:
        # Try the current key first, then the next one, so a key rotation in the QStash
        # console does not reject deliveries signed with the new key.
        last_error: jwt.InvalidSignatureError | None = None
        for key in self._keys:
            try:
                return jwt.decode(
                    signature,
                    key,
                    algorithms=[ALGORITHM],
                    issuer=ISSUER,
                    leeway=self._leeway,
                    options={"require": ["iss", "sub", "exp", "nbf"]},
                )
            except jwt.InvalidSignatureError as exc:
                last_error = exc
            except jwt.InvalidAlgorithmError as exc:
                raise SignatureError(
                    "algorithm", f"signature algorithm {_algorithm_of(signature)!r} is not {ALGORITHM}"
                ) from exc
            except jwt.ExpiredSignatureError as exc:
                raise SignatureError("expired", "signature has expired") from exc
            except jwt.ImmatureSignatureError as exc:
                raise SignatureError("not_yet_valid", "signature is not valid yet (nbf is in the future)") from exc
            except jwt.InvalidIssuerError as exc:
                raise SignatureError("issuer", f"signature issuer is not {ISSUER!r}") from exc
            except jwt.MissingRequiredClaimError as exc:
                raise SignatureError("malformed", f"signature lacks the {exc.claim!r} claim") from exc
            except jwt.DecodeError as exc:
                raise SignatureError("malformed", "Upstash-Signature is not a well-formed JWT") from exc
            except jwt.InvalidTokenError as exc:
                raise SignatureError("malformed", f"signature is invalid: {exc}") from exc

        raise SignatureError(
            "key", "signature was not made with the current or the next QStash signing key"
        ) from last_error


def _algorithm_of(signature: str) -> object:
    # Read only to name the algorithm in an error, after PyJWT rejected it.
    try:
        return jwt.get_unverified_header(signature).get("alg")
    except jwt.InvalidTokenError:
        return None
