"""The control API under ``/_sim/``, used by tests, demos and benchmarks.

Bodies are JSON in and out. An invalid request gets a 4xx response ``{"error": "..."}``
that names the field and how to fix it. Control requests are not recorded.

- ``POST /_sim/classes``: create or replace a class (201).
- ``GET /_sim/classes``: list the classes.
- ``POST /_sim/sessions``: create or replace a session (201).
- ``DELETE /_sim/sessions/{cookie}``: revoke a session.
- ``POST /_sim/users``: register login credentials (201).
- ``GET`` and ``PUT /_sim/config``: read or partly update the configuration.
- ``GET /_sim/requests[?path=/api/book]``: the recorded AimHarder requests.
- ``GET /_sim/bookings``: the current bookings.
- ``POST /_sim/reset``: clear all data and restore the default configuration.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from prebook_simulator.config import SimulatorConfig
from prebook_simulator.fields import FieldError, check_day, read_int, read_optional_text, read_text, require_object
from prebook_simulator.messages import Request, Response, json_error
from prebook_simulator.recorder import RequestLog
from prebook_simulator.state import GymClass, Session, SimulatorState

logger = logging.getLogger(__name__)

PREFIX = "/_sim/"

_CLASS_FIELDS = frozenset(
    {"id", "day", "capacity", "opens_at_ms", "window_days", "window_hours", "name", "time", "box", "activity_id"}
)
_SESSION_FIELDS = frozenset({"user", "cookie", "expires_at_ms", "token", "fingerprint"})
_USER_FIELDS = frozenset({"username", "password"})

_TIME_RANGE = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9] - ([01][0-9]|2[0-3]):[0-5][0-9]")
# RFC 6265 cookie-octet: printable ASCII except space, '"', ',', ';' and '\'.
_COOKIE_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]+")

_DEFAULT_WINDOW_DAYS = 4

Handler = Callable[[Request], Response]


class ControlApi:
    """Handlers of the ``/_sim/`` routes."""

    def __init__(self, state: SimulatorState, config: SimulatorConfig, log: RequestLog) -> None:
        self._state = state
        self._config = config
        self._log = log
        self._routes: dict[str, dict[str, Handler]] = {
            "/_sim/classes": {"POST": self._put_class, "GET": self._list_classes},
            "/_sim/sessions": {"POST": self._put_session},
            "/_sim/users": {"POST": self._put_user},
            "/_sim/config": {"GET": self._get_config, "PUT": self._update_config},
            "/_sim/requests": {"GET": self._list_requests},
            "/_sim/bookings": {"GET": self._list_bookings},
            "/_sim/reset": {"POST": self._reset},
        }

    def handle(self, request: Request) -> Response:
        path = request.path
        if path.startswith("/_sim/sessions/"):
            methods = {"DELETE": self._revoke_session}
        else:
            methods = self._routes.get(path)

        if methods is None:
            return json_error(404, f"no control route {path}. The routes are {sorted(self._routes)}")

        handler = methods.get(request.method)
        if handler is None:
            allowed = ", ".join(sorted(methods))
            response = json_error(405, f"{path} does not accept {request.method}. Use {allowed}")
            response.headers.append(("allow", allowed))
            return response

        try:
            return handler(request)
        except FieldError as error:
            return json_error(400, str(error))

    def _put_class(self, request: Request) -> Response:
        body = _read_json_object(request, _CLASS_FIELDS)
        gym_class = _parse_class(body)
        self._state.put_class(gym_class)
        logger.debug("Stored class %s on %s, capacity %s", gym_class.id, gym_class.day, gym_class.capacity)
        return Response(201, gym_class.to_json())

    def _list_classes(self, request: Request) -> Response:
        return Response(200, {"classes": [gym_class.to_json() for gym_class in self._state.classes.values()]})

    def _put_session(self, request: Request) -> Response:
        body = _read_json_object(request, _SESSION_FIELDS)

        cookie = read_text(body, "cookie")
        if not _COOKIE_VALUE.fullmatch(cookie):
            problem = "must contain only cookie-safe ASCII, without space, quote, comma, semicolon or backslash"
            raise FieldError("cookie", problem)

        session = Session(
            user=read_text(body, "user"),
            cookie=cookie,
            token=read_text(body, "token", default=secrets.token_hex(32)),
            fingerprint=read_optional_text(body, "fingerprint"),
            expires_at_ms=read_int(body, "expires_at_ms", nullable=True),
        )
        self._state.put_session(session)
        logger.debug("Stored a session for user %s, expiring at %s ms", session.user, session.expires_at_ms)
        return Response(201, session.to_json())

    def _revoke_session(self, request: Request) -> Response:
        cookie = unquote(request.path.removeprefix("/_sim/sessions/"))
        if not self._state.revoke_session(cookie):
            return json_error(404, f"session not found for cookie {cookie!r}. Create it with POST /_sim/sessions")

        logger.debug("Revoked a session through the control API")
        return Response(200, {"revoked": cookie})

    def _put_user(self, request: Request) -> Response:
        body = _read_json_object(request, _USER_FIELDS)
        username = read_text(body, "username")
        self._state.users[username] = read_text(body, "password")
        return Response(201, {"username": username})

    def _get_config(self, request: Request) -> Response:
        return Response(200, self._config.to_json())

    def _update_config(self, request: Request) -> Response:
        self._config.update(_read_json(request))
        logger.info("Simulator configuration is now %s", self._config.to_json())
        return Response(200, self._config.to_json())

    def _list_requests(self, request: Request) -> Response:
        path = request.query.get("path") or None
        return Response(200, {"requests": self._log.entries(path)})

    def _list_bookings(self, request: Request) -> Response:
        return Response(200, {"bookings": [booking.to_json() for booking in self._state.bookings.values()]})

    def _reset(self, request: Request) -> Response:
        self._state.clear()
        self._config.reset()
        self._log.clear()
        logger.info("Simulator reset: classes, sessions, users, bookings and requests cleared")
        return Response(200, {"reset": True, "config": self._config.to_json()})


def _read_json(request: Request) -> Any:
    try:
        return request.json()
    except ValueError as error:
        raise FieldError("(body)", f"must be valid UTF-8 JSON: {error}") from None


def _read_json_object(request: Request, known_fields: frozenset[str]) -> dict[str, Any]:
    body = require_object(_read_json(request))

    for name in body:
        if name not in known_fields:
            raise FieldError(name, f"is not accepted here. Use only {sorted(known_fields)}")

    return body


def _parse_class(body: dict[str, Any]) -> GymClass:
    day = body.get("day")
    if not isinstance(day, str):
        raise FieldError("day", f"must be a string written YYYYMMDD, got {day!r}")

    if "window_days" in body and "window_hours" in body:
        raise FieldError("window_hours", "cannot be combined with window_days. Send only one of them")

    if "window_hours" in body:
        window, window_unit = read_int(body, "window_hours", minimum=1), "hours"
    else:
        window, window_unit = read_int(body, "window_days", default=_DEFAULT_WINDOW_DAYS, minimum=1), "days"

    time_range = read_text(body, "time", default="07:00 - 08:00")
    if not _TIME_RANGE.fullmatch(time_range):
        raise FieldError("time", f"must be written 'HH:MM - HH:MM', got {time_range!r}")

    return GymClass(
        id=read_int(body, "id", minimum=0),
        day=check_day("day", day),
        capacity=read_int(body, "capacity", minimum=0),
        opens_at_ms=read_int(body, "opens_at_ms", nullable=True),
        window=window,
        window_unit=window_unit,
        name=read_text(body, "name", default="WOD"),
        time=time_range,
        box=_read_box(body.get("box")),
        activity_id=read_int(body, "activity_id", default=1, minimum=0),
    )


def _read_box(value: Any) -> str | None:
    if value is None:
        return None

    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise FieldError("box", f"must be the box id as a string or an integer, got {value!r}")

    return str(value)
