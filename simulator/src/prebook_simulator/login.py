"""AimHarder's session routes: ``/api/login`` and ``/api/tokenUpdate``.

Real AimHarder serves these on https://aimharder.com, and the simulator serves them on
the same port as the box API. Responses that are the simulator's own:

- Login with a known username and password: HTTP 200, ``{"token": "<hex>",
  "fingerprint": "<as sent>"}``, and Set-Cookie for ``amhrdrauth``, ``AWSALB``,
  ``AWSALBCORS`` and ``PHPSESSID``.
- Login with wrong credentials: HTTP 200, ``{"errorMssg": "Usuario o contraseña
  incorrectos", "errorMssgLang": "ERROR_LOGIN_INCORRECTO"}`` and no cookies.
- tokenUpdate with a live token (and the session's fingerprint, when it has one):
  HTTP 200, ``{"token": "<same token>"}`` and a Set-Cookie with a new ``amhrdrauth``.
  The session's expiry moves to now plus ``session_ttl_ms`` and the old cookie value
  stops working. An unknown or expired token, or another fingerprint, gets
  ``{"logout": 1}``.
- A missing or malformed field: HTTP 400 ``{"error": "field '...' ..."}``.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from prebook_simulator.api import LOGOUT, SESSION_COOKIE
from prebook_simulator.config import SimulatorConfig
from prebook_simulator.fields import FieldError, require_object
from prebook_simulator.localization import Text, localize
from prebook_simulator.messages import Request, Response, json_error
from prebook_simulator.state import Session, SimulatorState

logger = logging.getLogger(__name__)


class LoginApi:
    """Handlers of the login and token refresh routes."""

    def __init__(self, state: SimulatorState, config: SimulatorConfig) -> None:
        self._state = state
        self._config = config

    def login(self, request: Request, now_ns: int) -> Response:
        try:
            body = require_object(request.json())
            username = _read_string(body, "username")
            password = _read_string(body, "password")
            fingerprint = _read_string(body, "fingerprint", required=False)
        except ValueError as error:
            return json_error(400, _describe_body_error(error))

        if self._state.users.get(username) != password:
            logger.debug("Rejected a login for user %s: wrong username or password", username)
            return Response(200, {
                "errorMssg": localize(self._config.lang, Text.LOGIN_FAILED),
                "errorMssgLang": "ERROR_LOGIN_INCORRECTO",
            })

        session = self._state.start_session(username, fingerprint, self._expiry_ms(now_ns))
        logger.debug("User %s logged in with a session that expires at %s ms", username, session.expires_at_ms)
        return Response(
            200,
            {"token": session.token, "fingerprint": fingerprint},
            headers=_session_cookie_headers(session) + _balancer_cookie_headers(),
        )

    def update_token(self, request: Request, now_ns: int) -> Response:
        try:
            fields = _token_fields(request)
            token = _read_string(fields, "token")
            fingerprint = _read_string(fields, "fingerprint", required=False)
        except ValueError as error:
            return json_error(400, _describe_body_error(error))

        session = self._state.session_by_token(token)
        if session is None or not session.is_live(now_ns):
            return Response(200, LOGOUT)

        if session.fingerprint is not None and fingerprint != session.fingerprint:
            logger.debug("Rejected a token update for user %s: the fingerprint differs", session.user)
            return Response(200, LOGOUT)

        self._state.renew_session(session, self._expiry_ms(now_ns))
        return Response(200, {"token": session.token}, headers=_session_cookie_headers(session))

    def _expiry_ms(self, now_ns: int) -> int:
        return now_ns // 1_000_000 + self._config.session_ttl_ms


def _token_fields(request: Request) -> dict[str, Any]:
    if request.is_form():
        return request.form()

    return require_object(request.json())


def _read_string(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None

    if value is None:
        raise FieldError(name, "is missing. Send a non-empty string")

    if not isinstance(value, str) or (required and not value):
        raise FieldError(name, f"must be a non-empty string, got {value!r}")

    return value


def _describe_body_error(error: ValueError) -> str:
    if isinstance(error, FieldError):
        return str(error)

    return f"request body must be a JSON object or a form: {error}"


def _session_cookie_headers(session: Session) -> list[tuple[str, str]]:
    return [("set-cookie", f"{SESSION_COOKIE}={session.cookie}; Path=/")]


def _balancer_cookie_headers() -> list[tuple[str, str]]:
    balancer = secrets.token_urlsafe(48)
    return [
        ("set-cookie", f"AWSALB={balancer}; Path=/"),
        ("set-cookie", f"AWSALBCORS={balancer}; Path=/"),
        ("set-cookie", f"PHPSESSID={secrets.token_hex(13)}; path=/"),
    ]
