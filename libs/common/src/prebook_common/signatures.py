"""QStash request signatures: signing (for the local delivery and tests) and verification.

QStash signs each delivery with an HS256 JWT in the ``Upstash-Signature`` header, using
the current or the next signing key. Its claims: ``iss`` is ``Upstash``, ``sub`` is the
exact destination URL of the message, ``exp``/``nbf``/``iat`` bound its lifetime, and
``body`` is the base64url SHA-256 of the raw body bytes, with ``=`` padding that some
implementations strip (so the comparison ignores it).

The JWTs are read and written with joserfc. PyJWT 2.14 and later spend 30 to 50 µs per
token on a character-by-character check of each segment, over half of the gateway's
per-callback verification budget (docs/benchmarks.md, "Callback verification").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExpiredTokenError,
    JoseError,
    MissingClaimError,
    UnsupportedAlgorithmError,
)
from joserfc.jwk import OctKey

from prebook_common.errors import SignatureError

ISSUER = "Upstash"
ALGORITHM = "HS256"
DEFAULT_TTL_S = 300
_HEADER = {"alg": ALGORITHM, "typ": "JWT"}


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
    return jwt.encode(_HEADER, claims, OctKey.import_key(key), algorithms=[ALGORITHM])


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
        self._keys = tuple(OctKey.import_key(key) for key in (current_key, next_key) if key)
        self._url = url
        self._claims = jwt.JWTClaimsRegistry(
            leeway=clock_tolerance_s,
            iss={"essential": True, "value": ISSUER},
            sub={"essential": True},
            exp={"essential": True},
            nbf={"essential": True},
        )

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
        claims = self._verified_claims(signature)

        try:
            self._claims.validate(claims)
        except ExpiredTokenError as exc:
            raise SignatureError("expired", "signature has expired") from exc
        except MissingClaimError as exc:
            raise SignatureError("malformed", f"signature lacks the {exc.claim!r} claim") from exc
        except ClaimError as exc:
            raise _claim_error(exc) from exc

        return claims

    def _verified_claims(self, signature: str) -> dict[str, Any]:
        # Try the current key first, then the next one, so a key rotation in the QStash
        # console does not reject deliveries signed with the new key.
        last_error: BadSignatureError | None = None
        for key in self._keys:
            try:
                return jwt.decode(signature, key, algorithms=[ALGORITHM]).claims
            except BadSignatureError as exc:
                last_error = exc
            except UnsupportedAlgorithmError as exc:
                raise SignatureError(
                    "algorithm", f"signature algorithm {_algorithm_of(signature)!r} is not {ALGORITHM}"
                ) from exc
            except (JoseError, ValueError, TypeError) as exc:
                raise SignatureError("malformed", "Upstash-Signature is not a well-formed JWT") from exc

        raise SignatureError(
            "key", "signature was not made with the current or the next QStash signing key"
        ) from last_error


def _claim_error(error: ClaimError) -> SignatureError:
    if error.claim == "iss":
        return SignatureError("issuer", f"signature issuer is not {ISSUER!r}")
    if error.claim in ("nbf", "iat"):
        return SignatureError("not_yet_valid", f"signature is not valid yet ({error.claim} is in the future)")
    return SignatureError("malformed", f"signature claim {error.claim!r} is invalid: {error.description}")


def _algorithm_of(signature: str) -> object:
    # Read only to name the algorithm in an error, after joserfc rejected it.
    try:
        return jws.extract_compact(signature.encode()).protected.get("alg")
    except (JoseError, ValueError, TypeError):
        return None
