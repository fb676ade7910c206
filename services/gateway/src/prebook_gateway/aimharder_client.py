"""Calls from the gateway to AimHarder's box API, for a booking tried now.

The executor sends pre-built bytes on warm sockets because it fires at an opening
instant. Here nothing waits for an instant, so a plain httpx request is fast enough.
The client ignores proxy variables from the environment, as the executor's sockets do.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from datetime import time as clock_time
from typing import Any

import httpx
from sqlmodel.ext.asyncio.session import AsyncSession

from prebook_common.aimharder import BookAnswer, build_book_request, parse_book_answer
from prebook_common.crypto import DecryptionError, SecretBox
from prebook_common.models import AimharderSession, Box
from prebook_gateway.api_errors import ApiError

logger = logging.getLogger(__name__)

BOOKINGS_PATH = "/api/bookings"
# Start of "HH:MM - HH:MM", the class time range in a /api/bookings entry.
_START_TIME = re.compile(r"\s*([01]\d|2[0-3]):([0-5]\d)")


@dataclass(frozen=True)
class BookResult:
    answer: BookAnswer
    body: dict[str, Any] | None
    response_ms: float


def create_http_client(timeout_s: float, connect_timeout_s: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s), trust_env=False)


async def load_cookies(session: AsyncSession, secret_box: SecretBox, user_email: str) -> dict[str, str]:
    """Return the user's decrypted AimHarder cookies, or raise ApiError 424."""
    row = await session.get(AimharderSession, user_email)
    if row is None:
        raise ApiError(
            424, "no AimHarder session",
            f"no AimHarder session is stored for {user_email}: store one with "
            f"PUT /v1/sessions/{user_email}, then retry",
        )
    try:
        cookies = secret_box.decrypt_json(row.cookies_encrypted)
    except DecryptionError as exc:
        logger.error("AimHarder session of %s cannot be decrypted: %s", user_email, exc)
        raise ApiError(
            424, "unreadable AimHarder session",
            f"the AimHarder session stored for {user_email} cannot be decrypted with the configured "
            f"keys: store it again with PUT /v1/sessions/{user_email}",
        ) from exc
    if not isinstance(cookies, dict):
        raise ApiError(
            424, "unreadable AimHarder session",
            f"the AimHarder session stored for {user_email} is not a cookie map: store it again",
        )
    return {str(name): str(value) for name, value in cookies.items()}


class AimharderClient:
    def __init__(self, http: httpx.AsyncClient, base_url_of: Callable[[str], str]) -> None:
        """``base_url_of(subdomain)`` returns the box's base URL (Settings.aimharder_box_url)."""
        self._http = http
        self._base_url_of = base_url_of

    async def book(
        self,
        box: Box,
        *,
        class_id: str,
        class_day: date,
        insist: bool,
        family_id: str | None,
        cookies: dict[str, str],
    ) -> BookResult:
        """Send ``/api/book`` once and map the response; raise ApiError 502 when the request fails."""
        request = build_book_request(
            self._base_url_of(box.subdomain),
            class_id=class_id,
            class_day=class_day,
            insist=insist,
            family_id=family_id,
            cookies=cookies,
        )
        started = time.perf_counter()
        try:
            response = await self._http.post(request.url, content=request.body, headers=request.headers)
        except httpx.HTTPError as exc:
            raise _unreachable(box, exc) from exc
        response_ms = (time.perf_counter() - started) * 1000

        if response.status_code >= 500:
            raise ApiError(
                502, "AimHarder error",
                f"AimHarder responded with HTTP {response.status_code} for box {box.subdomain!r}: try again later",
            )
        answer = parse_book_answer(response.status_code, response.content)
        logger.info(
            "book now: class %s on %s in box %s: AimHarder returned %s (bookState %s) in %.1f ms",
            class_id, class_day, box.subdomain, answer.outcome, answer.book_state, response_ms,
        )
        return BookResult(answer=answer, body=_json_object(response.content), response_ms=response_ms)

    async def class_start_time(
        self, box: Box, *, class_id: str, class_day: date, family_id: str | None, cookies: dict[str, str]
    ) -> clock_time | None:
        """Return the start of ``class_id`` from the box's class list, or None if not listed."""
        # The listing needs the same session cookie and browser-like headers as /api/book.
        template = build_book_request(
            self._base_url_of(box.subdomain),
            class_id=class_id, class_day=class_day, insist=False, family_id=family_id, cookies=cookies,
        )
        headers = [(name, value) for name, value in template.headers if name.lower() != "content-type"]
        params = {"day": class_day.strftime("%Y%m%d"), "familyId": family_id or "", "box": box.aimharder_id}
        try:
            response = await self._http.get(
                self._base_url_of(box.subdomain) + BOOKINGS_PATH, params=params, headers=headers
            )
        except httpx.HTTPError as exc:
            raise _unreachable(box, exc) from exc

        listing = _json_object(response.content)
        if response.status_code != 200 or listing is None:
            logger.warning(
                "class list of box %s for %s: HTTP %s without a JSON object in the response",
                box.subdomain, class_day, response.status_code,
            )
            return None
        if listing.get("logout"):
            raise session_rejected()

        for entry in listing.get("bookings") or []:
            if isinstance(entry, dict) and str(entry.get("id")) == class_id:
                match = _START_TIME.match(str(entry.get("time", "")))
                if match:
                    return clock_time(int(match[1]), int(match[2]))
        return None


def session_rejected() -> ApiError:
    return ApiError(
        424, "AimHarder session expired",
        "AimHarder rejected the stored session (logout): log in to AimHarder again and store the "
        "new session with PUT /v1/sessions/{email}, then retry",
    )


def _unreachable(box: Box, exc: httpx.HTTPError) -> ApiError:
    logger.warning("AimHarder for box %s is unreachable: %s", box.subdomain, type(exc).__name__)
    return ApiError(
        502, "AimHarder unreachable",
        f"AimHarder did not answer for box {box.subdomain!r} ({type(exc).__name__}): try again later",
    )


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
