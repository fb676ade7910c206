"""Prebookings: ``/v1/prebookings``.

A user key sees and changes only its own user's prebookings. Another user's id gets
404, so a caller cannot learn whether it exists. Status codes:

- POST: 201; 403 for another user's ``user_email``; 422 for an unknown box, an invalid
  field or an ``execute_at`` in the past; 409 for a live duplicate (with
  ``existing_id``) or when the user already has PREBOOK_MAX_PENDING_PER_USER pending
  or scheduled prebookings. That quota is a conflict with the user's current
  prebookings, not a request rate, so it is 409 and not 429.
- GET list: 200 with ``items`` and ``total``; GET one: 200 or 404.
- DELETE: 200 with the cancelled prebooking; 409 naming the status once it is firing
  or final.
- PATCH: 200; 409 unless pending or scheduled; 422 for an instant in the past.
"""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, Depends, Query
from sqlmodel.ext.asyncio.session import AsyncSession

from prebook_common.models import PrebookingStatus
from prebook_gateway.api_errors import ApiError
from prebook_gateway.error_responses import error_responses
from prebook_gateway.auth import Caller, require_user
from prebook_gateway.dependencies import db_session, gateway_state
from prebook_gateway.keys import InvalidEmail, normalize_email
from prebook_gateway.prebooking_store import (
    NewPrebooking,
    box_window,
    cancel_own,
    compute_execute_at,
    create_prebooking,
    get_box,
    get_own,
    list_own,
    reschedule_own,
    timezones_of,
)
from prebook_gateway.schemas import PrebookingCreate, PrebookingOut, PrebookingPage, PrebookingPatch
from prebook_gateway.state import GatewayState

router = APIRouter(prefix="/v1/prebookings", tags=["prebookings"], responses=error_responses(401, 403, 422))

MAX_PAGE_SIZE = 100
# The largest offset that every database accepts (SQLite and Postgres take 64-bit integers).
MAX_OFFSET = 2**63 - 1


def check_own_email(caller: Caller, user_email: str | None) -> str:
    """Return the caller's email; raise ApiError 403 when ``user_email`` names another user."""
    if user_email is None:
        return caller.user_email
    try:
        requested = normalize_email(user_email)
    except InvalidEmail as exc:
        raise ApiError(422, "invalid email", str(exc), field="user_email") from exc
    if requested != caller.user_email:
        raise ApiError(
            403, "forbidden",
            f"this key belongs to {caller.user_email} and cannot create prebookings for {requested}: "
            f"leave user_email out, or use that user's key",
            field="user_email",
        )
    return requested


@router.post(
    "", status_code=201, response_model=PrebookingOut, responses=error_responses(409, 413), summary="Create a prebooking"
)
async def post_prebooking(
    body: PrebookingCreate,
    caller: Caller = Depends(require_user),
    state: GatewayState = Depends(gateway_state),
) -> PrebookingOut:
    user_email = check_own_email(caller, body.user_email)
    async with state.sessions() as session:
        box = await get_box(session, body.box)

    execute_at = body.execute_at
    if execute_at is None:
        window = box_window(box)
        execute_at = compute_execute_at(box, body.class_day, body.class_time, window)
        if execute_at <= state.clock():
            raise ApiError(
                422, "booking already open",
                f"booking for class {body.class_id} on {body.class_day.isoformat()} opened at "
                f"{execute_at.isoformat()} ({window.describe()} before {body.class_time:%H:%M} in {box.timezone}): "
                f"book it now with POST /v1/bookings",
                field="class_day",
            )

    new = NewPrebooking(
        user_email=user_email,
        box=box,
        class_id=body.class_id,
        class_day=body.class_day,
        family_id=body.family_id,
        insist=body.insist,
        execute_at=execute_at,
    )
    return await create_prebooking(state, new)


@router.get("", response_model=PrebookingPage, summary="List your prebookings, by execute_at")
async def list_prebookings(
    status: PrebookingStatus | None = Query(default=None, description="Only prebookings with this status"),
    limit: int = Query(default=20, ge=1, le=MAX_PAGE_SIZE),
    offset: int = Query(default=0, ge=0, le=MAX_OFFSET),
    caller: Caller = Depends(require_user),
    session: AsyncSession = Depends(db_session),
) -> PrebookingPage:
    items, total = await list_own(session, caller.user_email, status, limit, offset)
    return PrebookingPage(items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/{prebooking_id}", response_model=PrebookingOut, responses=error_responses(404), summary="One prebooking with its outcome"
)
async def get_prebooking(
    prebooking_id: UUID,
    caller: Caller = Depends(require_user),
    session: AsyncSession = Depends(db_session),
) -> PrebookingOut:
    row = await get_own(session, caller.user_email, prebooking_id)
    zones = await timezones_of(session, {row.box_subdomain})
    return PrebookingOut.of(row, zones.get(row.box_subdomain))


@router.delete(
    "/{prebooking_id}", response_model=PrebookingOut, responses=error_responses(404, 409), summary="Cancel a prebooking"
)
async def delete_prebooking(
    prebooking_id: UUID,
    caller: Caller = Depends(require_user),
    state: GatewayState = Depends(gateway_state),
) -> PrebookingOut:
    return await cancel_own(state, caller.user_email, prebooking_id)


@router.patch(
    "/{prebooking_id}",
    response_model=PrebookingOut,
    responses=error_responses(404, 409, 413),
    summary="Move a prebooking to another execute_at",
)
async def patch_prebooking(
    prebooking_id: UUID,
    body: PrebookingPatch,
    caller: Caller = Depends(require_user),
    state: GatewayState = Depends(gateway_state),
) -> PrebookingOut:
    return await reschedule_own(state, caller.user_email, prebooking_id, body.execute_at)
