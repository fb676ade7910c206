"""Users and their bearer API keys, as stored in ``app_user`` and ``api_key``.

A key is ``pbk_`` followed by 43 URL-safe base64 characters (32 random bytes). Only its
SHA-256 (hex) and a short display prefix are stored, so the key itself is shown once,
when it is issued. The REST API (admin key) and ``prebook keys`` both use these helpers.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from prebook_common.models import ApiKey, User, utcnow

KEY_PREFIX = "pbk_"
KEY_RANDOM_BYTES = 32
# Enough characters to tell a user's keys apart, too few to help guess one.
DISPLAY_PREFIX_CHARS = 12
KEY_PATTERN = re.compile(r"pbk_[A-Za-z0-9_-]{43}")

# A pragmatic check, not RFC 5322: one "@", no spaces, a dot in the domain.
EMAIL_PATTERN = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
MAX_EMAIL_CHARS = 320


class InvalidEmail(ValueError):
    pass


@dataclass(frozen=True)
class IssuedKey:
    """A newly created key: the row and the plaintext key, which is never stored."""

    row: ApiKey
    key: str


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)


def hash_key(key: str) -> str:
    """SHA-256 of the key, hex. A plain hash suffices because keys have 256 random bits."""
    return hashlib.sha256(key.encode()).hexdigest()


def is_well_formed(key: str) -> bool:
    return KEY_PATTERN.fullmatch(key) is not None


def normalize_email(email: str) -> str:
    """Return ``email`` stripped and lowercased, or raise InvalidEmail naming it."""
    normalized = email.strip().lower()
    if len(normalized) > MAX_EMAIL_CHARS or not EMAIL_PATTERN.fullmatch(normalized):
        raise InvalidEmail(f"{email!r} is not a valid email address: use the form name@example.com")
    return normalized


async def get_user(session: AsyncSession, email: str) -> User | None:
    return await session.get(User, email)


async def ensure_user(session: AsyncSession, email: str) -> tuple[User, bool]:
    """Return the user with ``email`` and whether it was created now. Does not commit."""
    user = await session.get(User, email)
    if user is not None:
        return user, False
    user = User(email=email)
    session.add(user)
    await session.flush()
    return user, True


async def issue_key(session: AsyncSession, user_email: str, name: str | None = None) -> IssuedKey:
    """Create a key for an existing user. Does not commit."""
    key = generate_key()
    row = ApiKey(
        user_email=user_email,
        key_hash=hash_key(key),
        prefix=key[:DISPLAY_PREFIX_CHARS],
        name=name,
    )
    session.add(row)
    await session.flush()
    return IssuedKey(row=row, key=key)


async def find_key(session: AsyncSession, key: str) -> ApiKey | None:
    """Return the stored key whose hash matches ``key``, revoked or not."""
    result = await session.exec(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
    return result.first()


async def revoke_key(session: AsyncSession, key_id: UUID, *, now: datetime | None = None) -> ApiKey | None:
    """Mark the key revoked and return it, or return None when no key has ``key_id``.

    Revoking a revoked key keeps its first ``revoked_at``. Does not commit.
    """
    row = await session.get(ApiKey, key_id)
    if row is None:
        return None
    if row.revoked_at is None:
        row.revoked_at = now or utcnow()
        session.add(row)
        await session.flush()
    return row


async def list_keys(session: AsyncSession, user_email: str) -> list[ApiKey]:
    result = await session.exec(
        select(ApiKey).where(ApiKey.user_email == user_email).order_by(ApiKey.created_at)
    )
    return list(result.all())
