"""AimHarder's login and token update, the two calls that create and renew a session.

- Login: ``POST {login_url}/api/login`` with JSON ``username``, ``password`` and
  ``fingerprint``. A successful response is JSON with ``token`` and sets ``amhrdrauth`` (plus
  ``AWSALB``, ``AWSALBCORS`` and ``PHPSESSID``) with Set-Cookie. Wrong credentials
  get HTTP 200 with ``errorMssg`` and ``errorMssgLang``.
- Token update: ``POST {login_url}/api/tokenUpdate`` with ``token`` and
  ``fingerprint``. A success sets a fresh ``amhrdrauth`` and may return a new token; a
  dead session gets ``{"logout": 1}``.

Errors::

    AimharderAuthError (PrebookError)
    ├── LoginRejected       AimHarder rejected the username or password
    ├── SessionLoggedOut    AimHarder responded {"logout": 1}: the session is dead
    └── AuthUnavailable     no usable response: network error, timeout, HTTP error, bad body

Messages name the user and AimHarder's error code, never a password, token or cookie.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from http.cookies import CookieError, SimpleCookie

import httpx

from prebook_common.aimharder import COMPANION_COOKIES, SESSION_COOKIE
from prebook_common.errors import PrebookError

LOGIN_PATH = "/api/login"
TOKEN_UPDATE_PATH = "/api/tokenUpdate"
SESSION_COOKIES = (SESSION_COOKIE, *COMPANION_COOKIES)


class AimharderAuthError(PrebookError):
    """A login or token update did not produce a session."""


class LoginRejected(AimharderAuthError):
    """AimHarder rejected the username or password. ``code`` is its ``errorMssgLang``."""

    def __init__(self, username: str, code: str | None) -> None:
        super().__init__(
            f"AimHarder rejected the login of {username}: wrong username or password "
            f"({code or 'no error code'}). Check the credentials and log in again"
        )
        self.code = code


class SessionLoggedOut(AimharderAuthError):
    """AimHarder responded with ``{"logout": 1}``: the session expired or was revoked."""


class AuthUnavailable(AimharderAuthError):
    """AimHarder sent no usable response: a network error, a timeout or an unexpected body."""


@dataclass(frozen=True)
class SessionGrant:
    """Cookies and token that a login or token update produced.

    ``expires_at`` is the ``amhrdrauth`` cookie's own expiry when AimHarder sent one.
    The secrets are left out of ``repr`` so that a logged grant shows none of them.
    """

    cookies: dict[str, str] = field(repr=False)
    token: str | None = field(repr=False)
    expires_at: datetime | None = None


class AimharderAuth:
    """Client of AimHarder's login and token update, on a caller's httpx client."""

    def __init__(self, login_url: str, http: httpx.AsyncClient, *, timeout_s: float) -> None:
        self._base_url = login_url.rstrip("/")
        self._http = http
        self._timeout_s = timeout_s

    async def login(self, username: str, password: str, fingerprint: str | None) -> SessionGrant:
        """Log in and return the new session.

        Raises LoginRejected for wrong credentials and AuthUnavailable when the response
        is not usable.
        """
        body = {"username": username, "password": password, "fingerprint": fingerprint or ""}
        response, data = await self._post(LOGIN_PATH, json_body=body, cookies=None)

        if data.get("errorMssgLang") or data.get("errorMssg"):
            raise LoginRejected(username, _as_text(data.get("errorMssgLang")))

        cookies = _read_set_cookies(response)
        if not cookies.get(SESSION_COOKIE):
            raise AuthUnavailable(
                f"AimHarder's login response for {username} set no {SESSION_COOKIE} cookie "
                f"(HTTP {response.status_code}, JSON fields {sorted(data)})"
            )
        return SessionGrant(
            cookies={name: value for name, value in cookies.items() if name in SESSION_COOKIES},
            token=_as_text(data.get("token")),
            expires_at=_cookie_expiry(response),
        )

    async def update_token(self, token: str, fingerprint: str | None, cookies: dict[str, str]) -> SessionGrant:
        """Renew the session of ``token`` and return ``cookies`` updated with the fresh ones.

        Raises SessionLoggedOut when AimHarder responds with ``{"logout": 1}`` and
        AuthUnavailable when the response is not usable.
        """
        body = {"token": token, "fingerprint": fingerprint or ""}
        response, data = await self._post(TOKEN_UPDATE_PATH, json_body=body, cookies=cookies)

        if data.get("logout"):
            raise SessionLoggedOut("AimHarder responded to the token update with logout: the session expired or was revoked.")

        fresh = _read_set_cookies(response)
        if not fresh.get(SESSION_COOKIE):
            raise AuthUnavailable(
                f"AimHarder's token update response set no {SESSION_COOKIE} cookie "
                f"(HTTP {response.status_code}, JSON fields {sorted(data)})"
            )
        merged = dict(cookies)
        merged.update((name, value) for name, value in fresh.items() if name in SESSION_COOKIES)
        return SessionGrant(
            cookies=merged,
            token=_as_text(data.get("token")) or token,
            expires_at=_cookie_expiry(response),
        )

    async def _post(
        self, path: str, *, json_body: dict[str, str], cookies: dict[str, str] | None
    ) -> tuple[httpx.Response, dict]:
        url = self._base_url + path
        headers = {"Accept": "application/json", "X-Requested-With": "XMLHttpRequest"}
        if cookies:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in cookies.items() if name in SESSION_COOKIES)

        try:
            response = await self._http.post(url, json=json_body, headers=headers, timeout=self._timeout_s)
        except httpx.TimeoutException as exc:
            raise AuthUnavailable(f"AimHarder at {url} did not respond within {self._timeout_s} s") from exc
        except httpx.HTTPError as exc:
            # The message of an httpx error names the URL, never the body or the headers.
            raise AuthUnavailable(f"request to {url} failed: {type(exc).__name__}: {exc}") from exc

        if response.status_code >= 400:
            raise AuthUnavailable(f"AimHarder at {url} responded with HTTP {response.status_code}")
        try:
            data = json.loads(response.content)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AuthUnavailable(f"AimHarder at {url} responded with HTTP {response.status_code} and a body that is not JSON") from exc
        if not isinstance(data, dict):
            raise AuthUnavailable(f"AimHarder at {url} returned a JSON {type(data).__name__}, not an object")
        return response, data


def _read_set_cookies(response: httpx.Response) -> dict[str, str]:
    """Name and value of every cookie in the response's Set-Cookie headers."""
    cookies: dict[str, str] = {}
    for header in response.headers.get_list("set-cookie"):
        parsed = SimpleCookie()
        try:
            parsed.load(header)
        except CookieError:
            continue
        for name, morsel in parsed.items():
            cookies[name] = morsel.value
    return cookies


def _cookie_expiry(response: httpx.Response) -> datetime | None:
    """Expiry of the ``amhrdrauth`` cookie from Max-Age or Expires, or None for a session cookie."""
    for header in response.headers.get_list("set-cookie"):
        parsed = SimpleCookie()
        try:
            parsed.load(header)
        except CookieError:
            continue
        morsel = parsed.get(SESSION_COOKIE)
        if morsel is None:
            continue

        max_age = morsel["max-age"]
        if max_age:
            try:
                return datetime.now(UTC) + timedelta(seconds=int(max_age))
            except ValueError:
                pass
        expires = morsel["expires"]
        if expires:
            try:
                value = parsedate_to_datetime(expires)
            except (TypeError, ValueError):
                return None
            return value if value.tzinfo else value.replace(tzinfo=UTC)
    return None


def _as_text(value: object) -> str | None:
    if value is None or value == "":
        return None
    return str(value)
