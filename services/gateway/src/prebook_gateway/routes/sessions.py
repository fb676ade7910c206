"""AimHarder sessions: ``/v1/sessions/{user_email}``.

- ``PUT`` stores cookies copied from a browser (``amhrdrauth`` is required), and
  optionally the token and fingerprint: 201 when new, 200 when replaced.
- ``POST .../login`` logs in to AimHarder and stores the session it returns; with
  ``remember_credentials`` the username and the encrypted password are kept, so the
  executor can log in again when AimHarder logs the session out. 200 or 201; wrong
  credentials get 422, an unreachable AimHarder 502.
- ``GET`` shows the session's age and state, never a cookie, token or password: 200.
- ``DELETE`` removes the session and any stored credentials: 204.

A user key manages only its own user's session; another email gets 403, and a missing
session 404. Bodies are parsed here rather than by FastAPI, because FastAPI's
validation errors quote the rejected input, which could be a password.
"""

from __future__ import annotations

import json
import logging
import secrets
from datetime import datetime
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from prebook_common.aimharder_login import AimharderAuth, AuthUnavailable, LoginRejected, SessionLoggedOut
from prebook_common.aimharder_sessions import Credentials, SessionRepository, session_state, validate_cookies
from prebook_common.models import AimharderSession
from prebook_gateway.api_errors import ApiError
from prebook_gateway.error_responses import error_responses
from prebook_gateway.auth import Caller, require_user
from prebook_gateway.keys import InvalidEmail, normalize_email
from prebook_gateway.state import GatewayState

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/sessions", tags=["AimHarder sessions"], responses=error_responses(401, 403, 422))

MAX_FIELD_CHARS = 4096
# Bytes of randomness in a fingerprint made up for a login that sent none.
FINGERPRINT_BYTES = 16

Body = TypeVar("Body", bound=BaseModel)


class SessionCookiesIn(BaseModel):
    """Cookies copied from a logged-in browser, and optionally the token and fingerprint."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    cookies: dict[str, Any] = Field(description="Cookie name to value; must contain amhrdrauth.")
    token: SecretStr | None = Field(default=None, max_length=MAX_FIELD_CHARS, description="AimHarder's session token, for refreshes.")
    fingerprint: str | None = Field(default=None, max_length=200)

    @field_validator("cookies")
    @classmethod
    def _check_cookies(cls, cookies: dict[str, Any]) -> dict[str, str]:
        return validate_cookies(cookies)


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    username: str = Field(min_length=1, max_length=320, description="The AimHarder login, usually an email.")
    password: SecretStr = Field(min_length=1, max_length=MAX_FIELD_CHARS)
    fingerprint: str | None = Field(
        default=None, max_length=200, description="Device fingerprint to log in with; a random one when absent."
    )
    remember_credentials: bool = Field(
        default=False,
        description="Store the username and the encrypted password, so the executor can log in again after a logout.",
    )


class SessionOut(BaseModel):
    """A stored session's age and state. It never contains a cookie, token or password."""

    user_email: str
    state: str = Field(description="valid, stale (refreshed before the next booking) or expired (renew it).")
    refreshed_at: datetime
    age_s: float = Field(description="Seconds since the session was stored or last refreshed.")
    expires_at: datetime | None
    token_stored: bool
    credentials_stored: bool = Field(description="Whether the executor may log in again after a logout.")
    aimharder_username: str | None
    refresh_failures: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime


def _session_out(row: AimharderSession, state: GatewayState) -> SessionOut:
    now = state.clock()
    credentials_stored = bool(row.auto_relogin and row.password_encrypted)
    return SessionOut(
        user_email=row.user_email,
        state=session_state(row, max_age_s=state.settings.session_max_age_s, now=now),
        refreshed_at=row.refreshed_at,
        age_s=round((now - row.refreshed_at).total_seconds(), 3),
        expires_at=row.expires_at,
        token_stored=row.token_encrypted is not None,
        credentials_stored=credentials_stored,
        aimharder_username=row.username if credentials_stored else None,
        refresh_failures=row.refresh_failures,
        last_error=row.last_error,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _own_email(user_email: str, caller: Caller) -> str:
    try:
        email = normalize_email(user_email)
    except InvalidEmail as exc:
        raise ApiError(422, "invalid email", str(exc), field="user_email") from exc
    if email != caller.user_email:
        raise ApiError(
            403, "forbidden",
            f"this API key belongs to {caller.user_email} and cannot manage the session of {email}",
        )
    return email


async def _parse(request: Request, model: type[Body]) -> Body:
    """Validate the JSON body; error messages name the field and never echo its value."""
    try:
        data = json.loads(await request.body())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(422, "invalid request", f"body is not valid UTF-8 JSON (position {getattr(exc, 'pos', 0)})") from None
    except (ValueError, RecursionError) as exc:
        # ValueError: an integer of more than 4300 digits. RecursionError: arrays or objects nested too deep.
        raise ApiError(422, "invalid request", f"body is not usable JSON ({type(exc).__name__})") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        first = errors[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        message = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "missing":
            message = "is missing: add it to the request"
        raise ApiError(422, "invalid request", f"field {field}: {message}", field=field) from None


def _repository(state: GatewayState) -> SessionRepository:
    return SessionRepository(state.engine, state.secret_box)


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


def _state(request: Request) -> GatewayState:
    return request.app.state.gateway


@router.put(
    "/{user_email}",
    response_model=SessionOut,
    summary="Store AimHarder cookies copied from a browser",
    responses={201: {"model": SessionOut}, **error_responses(413)},
    openapi_extra=_body_schema(SessionCookiesIn),
)
async def put_session(user_email: str, request: Request, response: Response, caller: Caller = Depends(require_user)) -> SessionOut:
    email = _own_email(user_email, caller)
    body = await _parse(request, SessionCookiesIn)
    state = _state(request)

    row, created = await _repository(state).put(
        email,
        cookies=body.cookies,
        token=body.token.get_secret_value() if body.token else None,
        fingerprint=body.fingerprint,
    )
    response.status_code = 201 if created else 200
    logger.info(
        "AimHarder session of %s %s from cookies (%d cookies, token %s)",
        email, "stored" if created else "replaced", len(body.cookies), "given" if body.token else "not given",
    )
    return _session_out(row, state)


@router.post(
    "/{user_email}/login",
    response_model=SessionOut,
    summary="Log in to AimHarder and store the session",
    responses={201: {"model": SessionOut}, **error_responses(413, 502)},
    openapi_extra=_body_schema(LoginIn),
)
async def login(user_email: str, request: Request, response: Response, caller: Caller = Depends(require_user)) -> SessionOut:
    email = _own_email(user_email, caller)
    body = await _parse(request, LoginIn)
    state = _state(request)
    settings = state.settings

    fingerprint = body.fingerprint or secrets.token_hex(FINGERPRINT_BYTES)
    auth = AimharderAuth(settings.aimharder_login_url, state.aimharder_http, timeout_s=settings.aimharder_timeout_s)
    try:
        grant = await auth.login(body.username, body.password.get_secret_value(), fingerprint)
    except LoginRejected as exc:
        logger.info("AimHarder login for %s rejected: wrong username or password (%s)", email, exc.code)
        raise ApiError(422, "login rejected", str(exc), field="password") from None
    except (AuthUnavailable, SessionLoggedOut) as exc:
        logger.warning("AimHarder login for %s failed: %s", email, exc)
        raise ApiError(502, "AimHarder unavailable", f"logging in to AimHarder failed: {exc}. Try again later") from None

    credentials = Credentials(body.username, body.password.get_secret_value()) if body.remember_credentials else None
    row, created = await _repository(state).put(
        email,
        cookies=grant.cookies,
        token=grant.token,
        fingerprint=fingerprint,
        expires_at=grant.expires_at,
        credentials=credentials,
    )
    response.status_code = 201 if created else 200
    logger.info(
        "AimHarder session of %s stored after a login (credentials %s)",
        email, "stored for automatic re-login" if credentials else "not stored",
    )
    return _session_out(row, state)


@router.get(
    "/{user_email}",
    response_model=SessionOut,
    summary="Show the session's age and state (never its secrets)",
    responses=error_responses(404),
)
async def get_session(user_email: str, request: Request, caller: Caller = Depends(require_user)) -> SessionOut:
    email = _own_email(user_email, caller)
    state = _state(request)
    row = await _repository(state).get(email)
    if row is None:
        raise ApiError(
            404, "no session",
            f"no AimHarder session is stored for {email}: store one with PUT /v1/sessions/{email} "
            f"or POST /v1/sessions/{email}/login",
        )
    return _session_out(row, state)


@router.delete(
    "/{user_email}",
    status_code=204,
    summary="Delete the session and any stored credentials",
    responses=error_responses(404),
)
async def delete_session(user_email: str, request: Request, caller: Caller = Depends(require_user)) -> Response:
    email = _own_email(user_email, caller)
    if not await _repository(_state(request)).delete(email):
        raise ApiError(404, "no session", f"no AimHarder session is stored for {email}, so none was deleted")
    logger.info("AimHarder session of %s deleted", email)
    return Response(status_code=204)
