"""Stored AimHarder sessions: cookies, token and optional login credentials, encrypted at rest.

Cookies, token and password are encrypted with ``SecretBox`` before they reach the
database and decrypted only where a request to AimHarder needs them. The fingerprint
and the username are stored in clear text, because neither lets anyone log in.

A refresh claims the row it read with a conditional UPDATE of ``updated_at``, and
stores its result only while ``updated_at`` still has the claimed value. So two
executors that refresh one session at once, or a refresh that overlaps a user's PUT,
never store a cookie that another write has replaced.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select

from prebook_common.aimharder import SESSION_COOKIE
from prebook_common.aimharder_login import SessionGrant
from prebook_common.crypto import SecretBox
from prebook_common.db import session_factory
from prebook_common.errors import SessionNotFound
from prebook_common.models import AimharderSession, utcnow

logger = logging.getLogger(__name__)

# RFC 6265: a cookie name is an HTTP token, a value is cookie-octets.
_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_COOKIE_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")
MAX_COOKIES = 20
MAX_COOKIE_CHARS = 4096
_TABLE = AimharderSession.__table__


class SessionState(StrEnum):
    VALID = "valid"
    # Older than PREBOOK_SESSION_MAX_AGE_S: refreshed before its next booking fires.
    STALE = "stale"
    # AimHarder logged it out, or its cookie's expiry passed.
    EXPIRED = "expired"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class SessionSecrets:
    """A stored session with its secrets decrypted; ``repr`` shows none of them."""

    user_email: str
    cookies: dict[str, str] = field(repr=False)
    token: str | None = field(repr=False)
    fingerprint: str | None
    credentials: Credentials | None

    @property
    def session_cookie(self) -> str | None:
        return self.cookies.get(SESSION_COOKIE)


def validate_cookies(cookies: Mapping[str, object]) -> dict[str, str]:
    """Return ``cookies`` as names to values, or raise ValueError saying what is wrong.

    The values go into a Cookie header, so each name must be an HTTP token and each
    value cookie-safe ASCII. The errors name the cookie, never its value.
    """
    if not cookies.get(SESSION_COOKIE):
        raise ValueError(f"cookies must contain a non-empty {SESSION_COOKIE}, AimHarder's session cookie")
    if len(cookies) > MAX_COOKIES:
        raise ValueError(f"at most {MAX_COOKIES} cookies are accepted, got {len(cookies)}")

    checked: dict[str, str] = {}
    for name, value in cookies.items():
        if not isinstance(name, str) or not _COOKIE_NAME.fullmatch(name):
            raise ValueError(f"cookie name {name!r} is invalid: use letters, digits and !#$%&'*+-.^_`|~")
        if not isinstance(value, str):
            raise ValueError(f"cookie {name} must be a string, got {type(value).__name__}")
        if len(value) > MAX_COOKIE_CHARS or not _COOKIE_VALUE.fullmatch(value):
            raise ValueError(
                f"cookie {name} has an invalid value: use at most {MAX_COOKIE_CHARS} printable ASCII "
                "characters without space, quote, comma, semicolon or backslash"
            )
        checked[name] = value
    return checked


def session_state(row: AimharderSession, *, max_age_s: float, now: datetime | None = None) -> SessionState:
    now = now or utcnow()
    if row.expires_at is not None and row.expires_at <= now:
        return SessionState.EXPIRED
    if (now - row.refreshed_at).total_seconds() > max_age_s:
        return SessionState.STALE
    return SessionState.VALID


class _Keep:
    """Marker: leave the stored credentials as they are."""


KEEP = _Keep()


class SessionRepository:
    """Reads and writes ``aimharder_session`` rows, encrypting on the way in."""

    def __init__(self, engine: AsyncEngine, secret_box: SecretBox) -> None:
        self._engine = engine
        self._sessions = session_factory(engine)
        self._box = secret_box

    async def get(self, user_email: str) -> AimharderSession | None:
        # Core rather than an ORM session, because a booking reads its session on the prepare path.
        statement = _TABLE.select().where(_TABLE.c.user_email == user_email)
        async with self._engine.connect() as connection:
            row = (await connection.execute(statement)).first()
        return None if row is None else AimharderSession(**row._mapping)

    async def load(self, user_email: str) -> tuple[AimharderSession, SessionSecrets]:
        """Return the row and its decrypted secrets; raise SessionNotFound or DecryptionError."""
        row = await self.get(user_email)
        if row is None:
            raise SessionNotFound(user_email)
        return row, self.decrypt(row)

    def decrypt(self, row: AimharderSession) -> SessionSecrets:
        """Decrypt a row's secrets; raise DecryptionError when no configured key fits."""
        cookies = self._box.decrypt_json(row.cookies_encrypted)
        if not isinstance(cookies, dict):
            raise SessionNotFound(row.user_email)

        credentials = None
        if row.auto_relogin and row.username and row.password_encrypted:
            credentials = Credentials(row.username, self._box.decrypt(row.password_encrypted))
        return SessionSecrets(
            user_email=row.user_email,
            cookies={str(name): str(value) for name, value in cookies.items()},
            token=self._box.decrypt(row.token_encrypted) if row.token_encrypted else None,
            fingerprint=row.fingerprint,
            credentials=credentials,
        )

    async def put(
        self,
        user_email: str,
        *,
        cookies: dict[str, str],
        token: str | None,
        fingerprint: str | None,
        expires_at: datetime | None = None,
        credentials: Credentials | None | _Keep = KEEP,
    ) -> tuple[AimharderSession, bool]:
        """Store a fresh session for ``user_email`` and return the row and whether it is new.

        The refresh state (failures, last error) starts over. ``credentials`` replaces
        the stored login credentials, None removes them, and KEEP leaves them.
        """
        now = utcnow()
        values = {
            "cookies_encrypted": self._box.encrypt_json(cookies),
            "token_encrypted": self._box.encrypt(token) if token else None,
            "fingerprint": fingerprint,
            "refresh_failures": 0,
            "last_error": None,
            "refreshed_at": now,
            "expires_at": expires_at,
            "updated_at": now,
        }
        if not isinstance(credentials, _Keep):
            values.update(self._credential_values(credentials))

        async with self._sessions() as session:
            row = await session.get(AimharderSession, user_email)
            created = row is None
            if created:
                row = AimharderSession(user_email=user_email, created_at=now, **values)
                session.add(row)
            else:
                for name, value in values.items():
                    setattr(row, name, value)
            try:
                await session.commit()
            except IntegrityError:
                # Another request created the row between the read and the insert.
                await session.rollback()
                return await self.put(
                    user_email, cookies=cookies, token=token, fingerprint=fingerprint,
                    expires_at=expires_at, credentials=credentials,
                )
            await session.refresh(row)
        return row, created

    async def delete(self, user_email: str) -> bool:
        async with self._sessions() as session:
            result = await session.exec(delete(AimharderSession).where(AimharderSession.user_email == user_email))
            await session.commit()
        return result.rowcount == 1

    async def claim(self, row: AimharderSession) -> datetime | None:
        """Claim ``row`` for a refresh; return the claim's ``updated_at``, or None when it changed."""
        claimed_at = max(utcnow(), row.updated_at + timedelta(microseconds=1))
        statement = (
            update(AimharderSession)
            .where(AimharderSession.user_email == row.user_email, AimharderSession.updated_at == row.updated_at)
            .values(updated_at=claimed_at)
        )
        async with self._sessions() as session:
            result = await session.exec(statement)
            await session.commit()
        return claimed_at if result.rowcount == 1 else None

    async def store_grant(
        self,
        user_email: str,
        claimed_at: datetime,
        grant: SessionGrant,
        *,
        fingerprint: str | None,
    ) -> bool:
        """Store the cookies and token of a refresh or re-login; False when the claim was lost."""
        now = utcnow()
        return await self._update_claimed(
            user_email,
            claimed_at,
            cookies_encrypted=self._box.encrypt_json(grant.cookies),
            token_encrypted=self._box.encrypt(grant.token) if grant.token else None,
            fingerprint=fingerprint,
            refresh_failures=0,
            last_error=None,
            refreshed_at=now,
            expires_at=grant.expires_at,
            updated_at=now,
        )

    async def store_failure(self, user_email: str, claimed_at: datetime, error: str, *, expired: bool) -> bool:
        """Count a failed refresh; an ``expired`` session also gets ``expires_at`` = now.

        ``error`` is stored as ``last_error`` and shown to the user, so it must hold no secret.
        """
        now = utcnow()
        values: dict[str, object] = {
            "refresh_failures": AimharderSession.refresh_failures + 1,
            "last_error": error,
            "updated_at": now,
        }
        if expired:
            values["expires_at"] = now
        return await self._update_claimed(user_email, claimed_at, **values)

    async def due_for_refresh(self, refreshed_before: datetime) -> list[AimharderSession]:
        """Sessions last refreshed before ``refreshed_before`` that a refresh could renew.

        A session with neither token nor stored credentials cannot be renewed, and one
        already expired can only be renewed by a login, so both need credentials.
        """
        now = utcnow()
        has_credentials = AimharderSession.auto_relogin.is_(True)
        statement = (
            select(AimharderSession)
            .where(AimharderSession.refreshed_at < refreshed_before)
            .where(or_(has_credentials, AimharderSession.token_encrypted.is_not(None)))
            .where(or_(has_credentials, AimharderSession.expires_at.is_(None), AimharderSession.expires_at > now))
            .order_by(AimharderSession.refreshed_at)
        )
        async with self._sessions() as session:
            return list((await session.exec(statement)).all())

    def _credential_values(self, credentials: Credentials | None) -> dict[str, object]:
        if credentials is None:
            return {"username": None, "password_encrypted": None, "auto_relogin": False}
        return {
            "username": credentials.username,
            "password_encrypted": self._box.encrypt(credentials.password),
            "auto_relogin": True,
        }

    async def _update_claimed(self, user_email: str, claimed_at: datetime, **values: object) -> bool:
        statement = (
            update(AimharderSession)
            .where(AimharderSession.user_email == user_email, AimharderSession.updated_at == claimed_at)
            .values(**values)
        )
        async with self._sessions() as session:
            result = await session.exec(statement)
            await session.commit()
        return result.rowcount == 1


@dataclass(frozen=True)
class ReencryptReport:
    sessions: int
    secrets: int


async def reencrypt_sessions(engine: AsyncEngine, secret_box: SecretBox, *, attempts: int = 5) -> ReencryptReport:
    """Re-encrypt every stored cookie set, token and password with the first configured key.

    Each row is rewritten only while its ``updated_at`` is unchanged, so a refresh that
    stored new secrets meanwhile is kept (it was encrypted with the configured keys
    too), and the row is read again. ``updated_at`` itself is left as it was.

    Raises DecryptionError when a stored secret fits none of the keys, and RuntimeError
    when a row kept changing for ``attempts`` reads.
    """
    sessions = session_factory(engine)
    async with sessions() as session:
        emails = list((await session.exec(select(AimharderSession.user_email))).all())

    rows = 0
    secrets = 0
    for email in emails:
        for _ in range(attempts):
            async with sessions() as session:
                row = await session.get(AimharderSession, email)
                if row is None:
                    break
                values = {"cookies_encrypted": secret_box.rotate(row.cookies_encrypted)}
                if row.token_encrypted:
                    values["token_encrypted"] = secret_box.rotate(row.token_encrypted)
                if row.password_encrypted:
                    values["password_encrypted"] = secret_box.rotate(row.password_encrypted)

                statement = (
                    update(AimharderSession)
                    .where(AimharderSession.user_email == email, AimharderSession.updated_at == row.updated_at)
                    .values(**values)
                )
                result = await session.exec(statement)
                await session.commit()
            if result.rowcount == 1:
                rows += 1
                secrets += len(values)
                break
            logger.debug("session of %s changed while it was re-encrypted; reading it again", email)
        else:
            raise RuntimeError(f"the session of {email} changed on each of {attempts} re-encryption attempts: run the command again")
    return ReencryptReport(sessions=rows, secrets=secrets)
