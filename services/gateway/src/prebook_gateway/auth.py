"""Bearer API keys on the REST API.

Every REST route depends on ``authenticate``. A request carries
``Authorization: Bearer <key>``, where the key is either a user's key (stored hashed in
``api_key``) or the admin key from ``PREBOOK_ADMIN_API_KEY``. A user key acts for its
one user. The admin key creates users and keys and writes boxes, but owns no
prebookings. A missing, malformed, unknown or revoked key gets 401 with
``WWW-Authenticate: Bearer``. Log lines name the reason and never any part of the key.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import or_, update

from prebook_common.models import ApiKey
from prebook_gateway.api_errors import ApiError
from prebook_gateway.keys import find_key, is_well_formed
from prebook_gateway.state import GatewayState

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="A user's API key (`pbk_...`) or the admin key, as `Authorization: Bearer <key>`.",
)

# last_used_at is written at most this often per key, so reads do not all become writes.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class Caller:
    """The sender of a request: a user's key, or the admin key, which has no user."""

    user_email: str | None
    key_id: UUID | None

    @property
    def is_admin(self) -> bool:
        return self.user_email is None


def _unauthorized(request: Request, reason: str, detail: str) -> ApiError:
    state: GatewayState = request.app.state.gateway
    state.auth_rejections.warning(reason, "request %s %s rejected: %s", request.method, request.url.path, reason)
    return ApiError(401, "unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})


async def authenticate(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Security(bearer_scheme),
) -> Caller:
    """Return the caller of ``request``, or raise ApiError 401."""
    state: GatewayState = request.app.state.gateway

    if credentials is None:
        if request.headers.get("Authorization") is None:
            raise _unauthorized(
                request, "no Authorization header",
                "missing API key: send the header 'Authorization: Bearer <key>'",
            )
        raise _unauthorized(
            request, "Authorization header is not a Bearer credential",
            "malformed Authorization header: use 'Authorization: Bearer <key>'",
        )
    presented = credentials.credentials

    admin_key = state.settings.admin_api_key
    if admin_key is not None and hmac.compare_digest(
        presented.encode(), admin_key.get_secret_value().encode()
    ):
        return Caller(user_email=None, key_id=None)

    if not is_well_formed(presented):
        raise _unauthorized(
            request, "malformed API key",
            "malformed API key: a Prebook key starts with 'pbk_' and has 47 characters; "
            "copy it again or ask the operator for a new one",
        )

    async with state.sessions() as session:
        row = await find_key(session, presented)
        if row is None:
            raise _unauthorized(
                request, "unknown API key",
                "invalid API key: no such key; ask the operator for a new one",
            )
        if row.revoked_at is not None:
            raise _unauthorized(
                request, f"API key {row.id} is revoked",
                "revoked API key: this key was revoked; ask the operator for a new one",
            )
        await _touch(session, row, state)

    return Caller(user_email=row.user_email, key_id=row.id)


async def _touch(session, row: ApiKey, state: GatewayState) -> None:
    now = state.clock()
    if row.last_used_at is not None and now - row.last_used_at < LAST_USED_RESOLUTION:
        return
    await session.exec(
        update(ApiKey)
        .where(
            ApiKey.id == row.id,
            or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now - LAST_USED_RESOLUTION),
        )
        .values(last_used_at=now)
    )
    await session.commit()


async def require_user(caller: Caller = Depends(authenticate)) -> Caller:
    """Return the caller when it is a user key; the admin key gets 403."""
    if caller.is_admin:
        raise ApiError(
            403, "forbidden",
            "the admin key belongs to no user: create a user key with POST /v1/users/{email}/keys "
            "(or `prebook keys create --user EMAIL`) and use that",
        )
    return caller


async def require_admin(caller: Caller = Depends(authenticate)) -> Caller:
    """Return the caller when it is the admin key; a user key gets 403."""
    if not caller.is_admin:
        raise ApiError(
            403, "forbidden",
            "this route needs the admin key (PREBOOK_ADMIN_API_KEY); a user key cannot use it",
        )
    return caller
