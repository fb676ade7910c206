"""Users and API keys: ``/v1/users``, ``/v1/keys`` and ``/v1/me``.

Creating users and keys needs the admin key. A key can be revoked by the admin key or
by a key of the same user; another user's key id gets 404.
"""

from __future__ import annotations

import logging
from uuid import UUID

from fastapi import APIRouter, Depends
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from prebook_common.models import ApiKey, User
from prebook_gateway.api_errors import ApiError
from prebook_gateway.error_responses import error_responses
from prebook_gateway.auth import Caller, authenticate, require_admin
from prebook_gateway.dependencies import db_session
from prebook_gateway.keys import InvalidEmail, issue_key, list_keys, normalize_email, revoke_key
from prebook_gateway.schemas import IssuedKeyOut, KeyCreate, KeyOut, MeOut, UserCreate, UserOut

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["users and keys"], responses=error_responses(401, 422))


def _email_or_422(email: str) -> str:
    try:
        return normalize_email(email)
    except InvalidEmail as exc:
        raise ApiError(422, "invalid email", str(exc), field="email") from exc


@router.post(
    "/users",
    status_code=201,
    response_model=UserOut,
    responses=error_responses(403, 409, 413),
    summary="Create a user (admin key)",
)
async def create_user(
    body: UserCreate,
    caller: Caller = Depends(require_admin),
    session: AsyncSession = Depends(db_session),
) -> UserOut:
    email = _email_or_422(body.email)
    if await session.get(User, email) is not None:
        raise ApiError(409, "user exists", f"user {email} already exists: create a key with POST /v1/users/{email}/keys")

    user = User(email=email)
    session.add(user)
    try:
        await session.commit()
    except IntegrityError as exc:
        raise ApiError(409, "user exists", f"user {email} already exists") from exc
    logger.info("user %s created", email)
    return UserOut.of(user)


@router.post(
    "/users/{email}/keys",
    status_code=201,
    response_model=IssuedKeyOut,
    responses=error_responses(403, 404, 413),
    summary="Create an API key for a user (admin key); the key is shown only in this response",
)
async def create_key(
    email: str,
    body: KeyCreate | None = None,
    caller: Caller = Depends(require_admin),
    session: AsyncSession = Depends(db_session),
) -> IssuedKeyOut:
    email = _email_or_422(email)
    if await session.get(User, email) is None:
        raise ApiError(404, "unknown user", f"user {email} not found: create it with POST /v1/users first")

    issued = await issue_key(session, email, body.name if body else None)
    await session.commit()
    logger.info("API key %s issued for %s", issued.row.id, email)
    return IssuedKeyOut(**KeyOut.of(issued.row).model_dump(), key=issued.key)


@router.get(
    "/users/{email}/keys",
    response_model=list[KeyOut],
    responses=error_responses(403, 404),
    summary="List a user's API keys (admin key)",
)
async def get_user_keys(
    email: str,
    caller: Caller = Depends(require_admin),
    session: AsyncSession = Depends(db_session),
) -> list[KeyOut]:
    email = _email_or_422(email)
    if await session.get(User, email) is None:
        raise ApiError(404, "unknown user", f"user {email} not found: create it with POST /v1/users")
    return [KeyOut.of(row) for row in await list_keys(session, email)]


@router.delete("/keys/{key_id}", response_model=KeyOut, responses=error_responses(404), summary="Revoke an API key")
async def delete_key(
    key_id: UUID,
    caller: Caller = Depends(authenticate),
    session: AsyncSession = Depends(db_session),
) -> KeyOut:
    row = await session.get(ApiKey, key_id)
    if row is None or (not caller.is_admin and row.user_email != caller.user_email):
        raise ApiError(404, "not found", f"API key {key_id} not found")

    revoked = await revoke_key(session, key_id)
    await session.commit()
    logger.info("API key %s of %s revoked", key_id, row.user_email)
    return KeyOut.of(revoked)


@router.get("/me", response_model=MeOut, summary="Who the presented key belongs to")
async def me(caller: Caller = Depends(authenticate), session: AsyncSession = Depends(db_session)) -> MeOut:
    if caller.is_admin:
        return MeOut(admin=True, user_email=None, key=None)
    row = await session.get(ApiKey, caller.key_id)
    return MeOut(admin=False, user_email=caller.user_email, key=KeyOut.of(row) if row else None)
