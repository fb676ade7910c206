"""Loading a user's AimHarder session cookies for a booking."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from prebook_common.crypto import SecretBox
from prebook_common.db import session_factory
from prebook_common.errors import SessionNotFound
from prebook_common.models import AimharderSession


class SessionStore:
    def __init__(self, engine: AsyncEngine, secret_box: SecretBox) -> None:
        self._sessions = session_factory(engine)
        self._box = secret_box

    async def load_cookies(self, user_email: str) -> dict[str, str]:
        """Decrypt and return the user's AimHarder cookies; raise SessionNotFound if none."""
        async with self._sessions() as session:
            row = await session.get(AimharderSession, user_email)
        if row is None:
            raise SessionNotFound(user_email)

        cookies = self._box.decrypt_json(row.cookies_encrypted)
        if not isinstance(cookies, dict):
            raise SessionNotFound(user_email)
        return {str(name): str(value) for name, value in cookies.items()}
