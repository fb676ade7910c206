"""Creating, listing, cancelling and rescheduling a user's prebookings.

Every change is committed before its event is published (see publishing.py). A
creation first locks the user's ``app_user`` row with an UPDATE, so two concurrent
requests of one user cannot both pass the duplicate and quota checks. The UPDATE is
also what makes SQLite take its write lock before those reads.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time

from sqlalchemy import func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from prebook_common.events import PrebookingCancelled, PrebookingCreated, PrebookingRescheduled
from prebook_common.models import (
    FINAL_STATUSES,
    Box,
    Prebooking,
    PrebookingStatus,
    User,
    allowed_sources,
    datetime_to_ms,
)
from prebook_gateway.api_errors import ApiError
from prebook_gateway.opening import BookingWindow, class_start, load_zone, opening_instant
from prebook_gateway.schemas import PrebookingOut
from prebook_gateway.state import GatewayState

logger = logging.getLogger(__name__)

# Statuses that count against PREBOOK_MAX_PENDING_PER_USER and that PATCH may move.
WAITING_STATUSES = (PrebookingStatus.PENDING, PrebookingStatus.SCHEDULED)


@dataclass(frozen=True)
class NewPrebooking:
    user_email: str
    box: Box
    class_id: str
    class_day: date
    family_id: str | None
    insist: bool
    execute_at: datetime


async def get_box(session: AsyncSession, subdomain: str) -> Box:
    """Return the box, or raise ApiError 422 naming it."""
    box = await session.get(Box, subdomain)
    if box is None:
        raise ApiError(
            422, "unknown box",
            f"box {subdomain!r} is not configured: create it with PUT /v1/boxes/{subdomain} "
            f"(admin key), then retry",
            field="box",
        )
    return box


def box_window(box: Box) -> BookingWindow:
    """Return the box's configured window, or raise ApiError 422 when it has none."""
    if box.window_days is None and box.window_hours is None:
        raise ApiError(
            422, "no booking window",
            f"box {box.subdomain!r} has no booking window: set window_days or window_hours with "
            f"PUT /v1/boxes/{box.subdomain}, or create the prebooking with an explicit execute_at",
            field="execute_at",
        )
    if box.window_days is not None:
        return BookingWindow(days=box.window_days)
    return BookingWindow(hours=box.window_hours)


def compute_execute_at(box: Box, class_day: date, class_time: time | None, window: BookingWindow) -> datetime:
    """Return the opening instant of the class in the box's zone, or raise ApiError 422."""
    if class_time is None:
        raise ApiError(
            422, "class_time missing",
            f"class_time is needed to compute when booking opens for class_day {class_day.isoformat()}: "
            f"send the class start as HH:MM local time, or send execute_at",
            field="class_time",
        )
    start = class_start(class_day, class_time, load_zone(box.timezone))
    execute_at = opening_instant(start, window)
    logger.debug(
        "class at %s in box %s with a window of %s opens at %s",
        start.isoformat(), box.subdomain, window.describe(), execute_at.isoformat(),
    )
    return execute_at


async def create_prebooking(state: GatewayState, new: NewPrebooking) -> PrebookingOut:
    """Store a pending prebooking, publish ``prebooking.created`` and return it.

    Raises ApiError 422 for an instant in the past, 409 for a live duplicate or when the
    user already has PREBOOK_MAX_PENDING_PER_USER waiting prebookings.
    """
    now = state.clock()
    if new.execute_at <= now:
        raise ApiError(
            422, "execute_at in the past",
            f"execute_at {new.execute_at.isoformat()} is not after the current time {now.isoformat()}: "
            f"the booking window is already open, so book now with POST /v1/bookings",
            field="execute_at",
        )

    async with state.sessions() as session:
        await session.exec(update(User).where(col(User.email) == new.user_email).values(email=User.email))

        duplicate = (
            await session.exec(
                select(Prebooking).where(
                    Prebooking.user_email == new.user_email,
                    Prebooking.box_subdomain == new.box.subdomain,
                    Prebooking.class_id == new.class_id,
                    Prebooking.class_day == new.class_day,
                    _same_family(new.family_id),
                    col(Prebooking.status).not_in(FINAL_STATUSES),
                )
            )
        ).first()
        if duplicate is not None:
            raise ApiError(
                409, "duplicate prebooking",
                f"prebooking {duplicate.id} already books class {new.class_id} on "
                f"{new.class_day.isoformat()} in box {new.box.subdomain!r} (status {duplicate.status}): "
                f"cancel it with DELETE /v1/prebookings/{duplicate.id} or reschedule it with PATCH",
                existing_id=duplicate.id,
                status=duplicate.status,
            )

        waiting = (
            await session.exec(
                select(func.count())
                .select_from(Prebooking)
                .where(Prebooking.user_email == new.user_email, col(Prebooking.status).in_(WAITING_STATUSES))
            )
        ).one()
        limit = state.settings.max_pending_per_user
        if waiting >= limit:
            raise ApiError(
                409, "too many pending prebookings",
                f"user {new.user_email} already has {waiting} pending or scheduled prebookings, the maximum "
                f"(PREBOOK_MAX_PENDING_PER_USER={limit}): cancel one or wait until one fires",
                limit=limit,
            )

        row = Prebooking(
            user_email=new.user_email,
            box_subdomain=new.box.subdomain,
            box_aimharder_id=new.box.aimharder_id,
            class_id=new.class_id,
            class_day=new.class_day,
            family_id=new.family_id,
            insist=new.insist,
            execute_at=new.execute_at,
            status=PrebookingStatus.PENDING,
            created_at=now,
            updated_at=now,
        )
        session.add(row)
        await session.commit()

    logger.info(
        "prebooking %s created for %s: class %s on %s in box %s, execute_at %s",
        row.id, row.user_email, row.class_id, row.class_day, row.box_subdomain, row.execute_at.isoformat(),
    )
    event = PrebookingCreated(prebooking_id=row.id, execute_at_ms=datetime_to_ms(row.execute_at))
    await state.publisher.publish(event, f"{row.id}:created")
    return PrebookingOut.of(row, new.box.timezone)


def _same_family(family_id: str | None):
    if family_id is None:
        return col(Prebooking.family_id).is_(None)
    return Prebooking.family_id == family_id


async def get_own(session: AsyncSession, user_email: str, prebooking_id: uuid.UUID) -> Prebooking:
    """Return the user's prebooking, or raise ApiError 404 (also for another user's id)."""
    row = await session.get(Prebooking, prebooking_id)
    if row is None or row.user_email != user_email:
        raise _not_found(prebooking_id)
    return row


def _not_found(prebooking_id: uuid.UUID) -> ApiError:
    return ApiError(
        404, "not found",
        f"prebooking {prebooking_id} not found: list yours with GET /v1/prebookings",
    )


async def timezones_of(session: AsyncSession, subdomains: set[str]) -> dict[str, str]:
    if not subdomains:
        return {}
    boxes = await session.exec(select(Box).where(col(Box.subdomain).in_(subdomains)))
    return {box.subdomain: box.timezone for box in boxes}


async def list_own(
    session: AsyncSession, user_email: str, status: PrebookingStatus | None, limit: int, offset: int
) -> tuple[list[PrebookingOut], int]:
    """Return one page of the user's prebookings, by execute_at, and the total count."""
    conditions = [Prebooking.user_email == user_email]
    if status is not None:
        conditions.append(Prebooking.status == status)

    total = (await session.exec(select(func.count()).select_from(Prebooking).where(*conditions))).one()
    rows = list(
        await session.exec(
            select(Prebooking)
            .where(*conditions)
            .order_by(col(Prebooking.execute_at), col(Prebooking.id))
            .limit(limit)
            .offset(offset)
        )
    )
    zones = await timezones_of(session, {row.box_subdomain for row in rows})
    return [PrebookingOut.of(row, zones.get(row.box_subdomain)) for row in rows], total


async def cancel_own(state: GatewayState, user_email: str, prebooking_id: uuid.UUID) -> PrebookingOut:
    """Cancel the user's prebooking and publish ``prebooking.cancelled``.

    Raises ApiError 404 for an unknown or foreign id, 409 once it is firing or final.
    """
    async with state.sessions() as session:
        result = await session.exec(
            update(Prebooking)
            .where(
                col(Prebooking.id) == prebooking_id,
                col(Prebooking.user_email) == user_email,
                col(Prebooking.status).in_(allowed_sources(PrebookingStatus.CANCELLED)),
            )
            .values(status=PrebookingStatus.CANCELLED, updated_at=state.clock())
            .returning(Prebooking)
        )
        row = result.scalars().first()
        await session.commit()

        if row is None:
            current = await get_own(session, user_email, prebooking_id)
            raise ApiError(
                409, "cannot cancel",
                f"prebooking {prebooking_id} is {current.status}, so it can no longer be cancelled: "
                f"only pending, scheduled or prepared prebookings can",
                status=current.status,
            )
        zones = await timezones_of(session, {row.box_subdomain})

    logger.info("prebooking %s cancelled by %s", prebooking_id, user_email)
    event = PrebookingCancelled(prebooking_id=row.id, execute_at_ms=datetime_to_ms(row.execute_at))
    await state.publisher.publish(event, f"{row.id}:cancelled")
    return PrebookingOut.of(row, zones.get(row.box_subdomain))


async def reschedule_own(
    state: GatewayState, user_email: str, prebooking_id: uuid.UUID, execute_at: datetime
) -> PrebookingOut:
    """Move a pending or scheduled prebooking to ``execute_at`` and publish ``prebooking.rescheduled``.

    Raises ApiError 404 for an unknown or foreign id, 409 once it is prepared or later,
    and 422 for an instant in the past. The same instant again changes nothing.
    """
    now = state.clock()
    async with state.sessions() as session:
        row = await get_own(session, user_email, prebooking_id)
        zones = await timezones_of(session, {row.box_subdomain})
        if row.status not in WAITING_STATUSES:
            raise _cannot_reschedule(row)
        if execute_at <= now:
            raise ApiError(
                422, "execute_at in the past",
                f"execute_at {execute_at.isoformat()} is not after the current time {now.isoformat()}: "
                f"send a later instant",
                field="execute_at",
            )
        previous = row.execute_at
        if execute_at == previous:
            return PrebookingOut.of(row, zones.get(row.box_subdomain))

        result = await session.exec(
            update(Prebooking)
            .where(
                col(Prebooking.id) == prebooking_id,
                col(Prebooking.status).in_(WAITING_STATUSES),
                col(Prebooking.execute_at) == previous,
            )
            .values(execute_at=execute_at, updated_at=now)
            .returning(Prebooking)
        )
        updated = result.scalars().first()
        await session.commit()
        if updated is None:
            # Another request or the executor changed the row after it was read.
            raise _cannot_reschedule(await get_own(session, user_email, prebooking_id))

    logger.info(
        "prebooking %s rescheduled from %s to %s", prebooking_id, previous.isoformat(), execute_at.isoformat()
    )
    event = PrebookingRescheduled(
        prebooking_id=updated.id,
        execute_at_ms=datetime_to_ms(execute_at),
        previous_execute_at_ms=datetime_to_ms(previous),
    )
    # Every reschedule is its own event; only the retries of this one share its id.
    await state.publisher.publish(event, f"{updated.id}:rescheduled:{uuid.uuid4().hex[:12]}")
    return PrebookingOut.of(updated, zones.get(updated.box_subdomain))


def _cannot_reschedule(row: Prebooking) -> ApiError:
    return ApiError(
        409, "cannot reschedule",
        f"prebooking {row.id} is {row.status}, so it can no longer be rescheduled: only pending or "
        f"scheduled prebookings can",
        status=row.status,
    )
