"""AimHarder's booking protocol: the request Prebook sends and the answers it maps.

AimHarder has no official API. This follows the web API that public booking bots use:

- ``POST https://{box}.aimharder.com/api/book`` with form fields ``id`` (class session
  id), ``day`` (YYYYMMDD), ``insist`` (1 joins the waitlist) and ``familyId``, and the
  session cookie ``amhrdrauth``.
- The answer is JSON with ``bookState`` and, on success, the booking ``id``; errors add
  ``errorMssg`` (Spanish text, kept as it comes) and ``errorMssgLang`` (a code).
- An expired session answers HTTP 200 with ``{"logout": 1}``: an auth failure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from urllib.parse import urlencode, urlsplit

BOOK_PATH = "/api/book"
SESSION_COOKIE = "amhrdrauth"
# Cookies the load balancer and PHP set; AimHarder's web client sends them back.
COMPANION_COOKIES = ("AWSALB", "AWSALBCORS", "PHPSESSID")

TOO_EARLY_CODES = frozenset({"ERROR_ANTELACION_CLIENTE", "ERROR_ANTELACION_CLIENTE_HORAS"})
ALREADY_BOOKED_CODE = "NOPUEDESRESERVAMISMAHORA"


class BookOutcome(StrEnum):
    BOOKED = "booked"
    WAITLISTED = "waitlisted"
    ALREADY_BOOKED = "already_booked"
    FULL = "full"
    NO_CREDITS = "no_credits"
    TOO_EARLY = "too_early"
    PAYMENT_PENDING = "payment_pending"
    TOO_LATE = "too_late"
    DAILY_LIMIT = "daily_limit"
    AUTH_FAILED = "auth_failed"
    UNKNOWN = "unknown"


SUCCESS_OUTCOMES = frozenset({BookOutcome.BOOKED, BookOutcome.WAITLISTED, BookOutcome.ALREADY_BOOKED})

_OUTCOME_BY_STATE = {
    1: BookOutcome.BOOKED,
    0: BookOutcome.WAITLISTED,
    -1: BookOutcome.FULL,
    -2: BookOutcome.NO_CREDITS,
    -4: BookOutcome.TOO_EARLY,
    -5: BookOutcome.PAYMENT_PENDING,
    -7: BookOutcome.TOO_LATE,
    -8: BookOutcome.DAILY_LIMIT,
}


@dataclass(frozen=True)
class BookAnswer:
    """AimHarder's answer to one booking request, mapped to an outcome."""

    outcome: BookOutcome
    http_status: int
    book_state: int | None = None
    booking_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    daily_max: int | None = None

    @property
    def is_success(self) -> bool:
        return self.outcome in SUCCESS_OUTCOMES

    @property
    def is_final(self) -> bool:
        """False only for "too early", which a later attempt can turn into a booking."""
        return self.outcome is not BookOutcome.TOO_EARLY


def parse_book_answer(http_status: int, body: bytes) -> BookAnswer:
    """Map an HTTP status and body from ``/api/book`` to a BookAnswer.

    Every documented bookState has its outcome. ``{"logout": 1}`` is AUTH_FAILED whatever
    the HTTP status, and -12 is split by its ``errorMssgLang``: too early, already booked
    at that time (a success, since the user holds the place), or unknown.
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        snippet = body[:120].decode("utf-8", "replace")
        return BookAnswer(
            BookOutcome.UNKNOWN,
            http_status,
            error_code=f"HTTP_{http_status}",
            error_message=f"AimHarder answered HTTP {http_status} with a body that is not JSON: {snippet!r}",
        )

    if not isinstance(data, dict):
        return BookAnswer(
            BookOutcome.UNKNOWN, http_status, error_code="UNEXPECTED_ANSWER",
            error_message=f"AimHarder answered a JSON {type(data).__name__}, not an object",
        )

    if data.get("logout"):
        return BookAnswer(
            BookOutcome.AUTH_FAILED,
            http_status,
            error_code="LOGOUT",
            error_message="AimHarder rejected the session (logout): renew the AimHarder session",
        )

    book_state = _as_int(data.get("bookState"))
    error_code = _as_str(data.get("errorMssgLang"))
    error_message = _as_str(data.get("errorMssg"))
    booking_id = _as_str(data.get("id"))

    if book_state is None:
        return BookAnswer(
            BookOutcome.UNKNOWN, http_status, error_code=error_code or f"HTTP_{http_status}",
            error_message=error_message or "AimHarder's answer has no bookState",
        )

    if book_state == -12:
        outcome = _outcome_of_minus_12(error_code)
    else:
        outcome = _OUTCOME_BY_STATE.get(book_state, BookOutcome.UNKNOWN)

    return BookAnswer(
        outcome=outcome,
        http_status=http_status,
        book_state=book_state,
        booking_id=booking_id if outcome in (BookOutcome.BOOKED, BookOutcome.WAITLISTED) else None,
        error_code=error_code,
        error_message=error_message,
        daily_max=_as_int(data.get("max")),
    )


def _outcome_of_minus_12(error_code: str | None) -> BookOutcome:
    if error_code in TOO_EARLY_CODES:
        return BookOutcome.TOO_EARLY
    if error_code == ALREADY_BOOKED_CODE:
        return BookOutcome.ALREADY_BOOKED
    return BookOutcome.UNKNOWN


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _as_str(value: object) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


@dataclass(frozen=True)
class BookRequest:
    """Everything needed to send one ``/api/book`` request, built before the instant."""

    url: str
    headers: list[tuple[str, str]]
    body: bytes


def build_book_request(
    box_url: str,
    *,
    class_id: str,
    class_day: date,
    insist: bool,
    family_id: str | None,
    cookies: dict[str, str],
) -> BookRequest:
    """Build the form request that books ``class_id`` on ``class_day`` at ``box_url``.

    ``box_url`` is the box's base URL (``https://{box}.aimharder.com`` in production).
    Only ``amhrdrauth`` and the load balancer and PHP cookies are sent.
    """
    body = urlencode(
        {
            "id": class_id,
            "day": class_day.strftime("%Y%m%d"),
            "insist": "1" if insist else "0",
            "familyId": family_id or "",
        }
    ).encode()

    sent_cookies = [
        f"{name}={cookies[name]}" for name in (SESSION_COOKIE, *COMPANION_COOKIES) if cookies.get(name)
    ]
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(box_url))
    headers = [
        ("Accept", "application/json, text/javascript, */*; q=0.01"),
        ("Content-Type", "application/x-www-form-urlencoded; charset=UTF-8"),
        ("X-Requested-With", "XMLHttpRequest"),
        ("Origin", origin),
        ("Referer", f"{origin}/schedule"),
        ("User-Agent", "Mozilla/5.0 (compatible; Prebook/0.1)"),
        ("Cookie", "; ".join(sent_cookies)),
    ]
    return BookRequest(url=box_url + BOOK_PATH, headers=headers, body=body)
