"""Booking now: ``POST /v1/bookings``.

The gateway sends ``/api/book`` with the user's stored AimHarder session at once:

- 200 with the mapped outcome and AimHarder's JSON for every final response (booked,
  waitlisted, full, no credits, ...), whether it is a success or not.
- 202 with a new prebooking when AimHarder responds "too early". The opening is the
  class start minus the window that AimHarder's message states (the box's window when
  the text names none). The class start is ``class_time``, or the time from
  AimHarder's class list when it is absent.
- 424 when no session is stored or AimHarder rejects it (``{"logout": 1}``). This is
  not 401, which means that Prebook rejected the API key.
- 502 when AimHarder cannot be reached or responds with HTTP 5xx.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from prebook_common.aimharder import BookOutcome
from prebook_gateway.aimharder_client import AimharderClient, load_cookies, session_rejected
from prebook_gateway.api_errors import ApiError
from prebook_gateway.error_responses import error_responses
from prebook_gateway.auth import Caller, require_user
from prebook_gateway.dependencies import gateway_state
from prebook_gateway.opening import parse_window_message
from prebook_gateway.prebooking_store import (
    NewPrebooking,
    box_window,
    compute_execute_at,
    create_prebooking,
    get_box,
)
from prebook_gateway.schemas import BookingCreate, BookingOut, PrebookingOut
from prebook_gateway.state import GatewayState

router = APIRouter(prefix="/v1/bookings", tags=["bookings"], responses=error_responses(401, 403, 422))


@router.post(
    "",
    response_model=BookingOut,
    responses={
        202: {"model": PrebookingOut, "description": "Too early: a prebooking was created for the opening"},
        **error_responses(409, 413, 424, 502),
    },
    summary="Book a class now, or prebook it when its window is not open yet",
)
async def post_booking(
    body: BookingCreate,
    caller: Caller = Depends(require_user),
    state: GatewayState = Depends(gateway_state),
) -> JSONResponse:
    async with state.sessions() as session:
        box = await get_box(session, body.box)
        cookies = await load_cookies(session, state.secret_box, caller.user_email)

    client = AimharderClient(state.aimharder_http, state.settings.aimharder_box_url)
    result = await client.book(
        box,
        class_id=body.class_id,
        class_day=body.class_day,
        insist=body.insist,
        family_id=body.family_id,
        cookies=cookies,
    )
    answer = result.answer

    if answer.outcome is BookOutcome.AUTH_FAILED:
        raise session_rejected()

    if answer.outcome is not BookOutcome.TOO_EARLY:
        booking = BookingOut(
            outcome=answer.outcome,
            book_state=answer.book_state,
            booking_id=answer.booking_id,
            error_code=answer.error_code,
            error_message=answer.error_message,
            aimharder=result.body,
        )
        return JSONResponse(booking.model_dump(mode="json"), status_code=200)

    window = parse_window_message(answer.error_message) or box_window(box)
    class_time = body.class_time
    if class_time is None:
        class_time = await client.class_start_time(
            box, class_id=body.class_id, class_day=body.class_day, family_id=body.family_id, cookies=cookies
        )
        if class_time is None:
            raise ApiError(
                422, "class_time missing",
                f"AimHarder's class list of box {box.subdomain!r} for {body.class_day.isoformat()} has no "
                f"class {body.class_id}, so its start time is unknown: send class_time as HH:MM",
                field="class_time",
            )

    execute_at = compute_execute_at(box, body.class_day, class_time, window)
    if execute_at <= state.clock():
        raise ApiError(
            409, "booking window mismatch",
            f"AimHarder responded too early ({answer.error_message!r}), but the opening computed from "
            f"class_time {class_time.strftime('%H:%M')} in {box.timezone} and a window of "
            f"{window.describe()} is {execute_at.isoformat()}, already past: check class_time and the "
            f"box's time zone",
        )

    new = NewPrebooking(
        user_email=caller.user_email,
        box=box,
        class_id=body.class_id,
        class_day=body.class_day,
        family_id=body.family_id,
        insist=body.insist,
        execute_at=execute_at,
    )
    prebooking = await create_prebooking(state, new)
    return JSONResponse(
        prebooking.model_dump(mode="json"),
        status_code=202,
        headers={"Location": f"/v1/prebookings/{prebooking.id}"},
    )
