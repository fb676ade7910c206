"""Request and response bodies of the REST API.

Request models reject unknown fields, and their validators raise messages that quote
the rejected value and the expected format, which the 422 response passes on.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from prebook_common.models import ApiKey, Box, Prebooking, PrebookingStatus, User, datetime_to_ms
from prebook_gateway.opening import load_zone

SUBDOMAIN_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,99}")
IDENTIFIER_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,50}")
_DAY_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIME_PATTERN = re.compile(r"\d{2}:\d{2}")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Instants outside these bounds are most likely typos, such as seconds sent as milliseconds.
MIN_EXECUTE_AT = datetime(2000, 1, 1, tzinfo=UTC)
MAX_EXECUTE_AT = datetime(2100, 1, 1, tzinfo=UTC)

MAX_WINDOW_DAYS = 365
MAX_WINDOW_HOURS = 24 * 365
DEFAULT_TIMEZONE = "Europe/Madrid"


def validate_subdomain(value: str) -> str:
    if not isinstance(value, str) or not SUBDOMAIN_PATTERN.fullmatch(value):
        raise ValueError(
            f"box {value!r} is not a valid subdomain: use the lowercase name before "
            f".aimharder.com (letters, digits and '-'), for example 'crossfitmadrid'"
        )
    return value


def _identifier(name: str, value: Any, *, optional: bool = False) -> str | None:
    """Accept an AimHarder id given as a string or an integer, returned as a string."""
    if value is None or (optional and value == ""):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not IDENTIFIER_PATTERN.fullmatch(value.strip()):
        raise ValueError(f"{name} {value!r} is not a valid AimHarder id: use 1-50 letters, digits, '_' or '-'")
    return value.strip()


def parse_day(name: str, value: Any) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _DAY_PATTERN.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"{name} {value!r} is not a valid date: use YYYY-MM-DD, for example '2027-03-29'")


def parse_time(name: str, value: Any) -> time:
    if isinstance(value, time):
        return value
    if isinstance(value, str) and _TIME_PATTERN.fullmatch(value):
        try:
            return time.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"{name} {value!r} is not a valid time: use HH:MM on a 24-hour clock, for example '09:00'")


def parse_instant(name: str, value: Any) -> datetime:
    """Parse epoch milliseconds or ISO 8601 with an offset into UTC, truncated to ms."""
    if isinstance(value, bool):
        raise ValueError(f"{name} {value!r} is not an instant: send ISO 8601 with an offset or epoch milliseconds")

    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        instant = EPOCH + timedelta(milliseconds=int(value))
    elif isinstance(value, str):
        text = value.strip()
        try:
            instant = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"{name} {value!r} is not an ISO 8601 instant: use for example "
                f"'2027-03-25T09:00:00+01:00', or epoch milliseconds"
            ) from None
        if instant.tzinfo is None:
            raise ValueError(
                f"{name} {value!r} has no UTC offset: add one such as '+01:00' or 'Z', "
                f"or send epoch milliseconds"
            )
    else:
        raise ValueError(f"{name} {value!r} is not an instant: send ISO 8601 with an offset or epoch milliseconds")

    instant = instant.astimezone(UTC)
    if not MIN_EXECUTE_AT <= instant < MAX_EXECUTE_AT:
        raise ValueError(
            f"{name} {value!r} is {instant.isoformat()}, outside 2000-2100: "
            f"epoch values are milliseconds, not seconds"
        )
    return instant.replace(microsecond=instant.microsecond // 1000 * 1000)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _ClassFields(_Request):
    box: str = Field(description="Box subdomain, as in https://{box}.aimharder.com")
    class_id: str = Field(description="AimHarder's id of the class session")
    class_day: date = Field(description="Day of the class, YYYY-MM-DD")
    insist: bool = Field(default=False, description="Join the waitlist when the class is full")
    family_id: str | None = Field(default=None, description="AimHarder familyId of a family member")

    @field_validator("box", mode="before")
    @classmethod
    def _check_box(cls, value: Any) -> str:
        return validate_subdomain(value.strip() if isinstance(value, str) else value)

    @field_validator("class_id", mode="before")
    @classmethod
    def _check_class_id(cls, value: Any) -> str | None:
        return _identifier("class_id", value)

    @field_validator("family_id", mode="before")
    @classmethod
    def _check_family_id(cls, value: Any) -> str | None:
        return _identifier("family_id", value, optional=True)

    @field_validator("class_day", mode="before")
    @classmethod
    def _check_day(cls, value: Any) -> date:
        return parse_day("class_day", value)


class PrebookingCreate(_ClassFields):
    """A prebooking that fires at ``execute_at``, or at the opening computed from the box's window."""

    user_email: str | None = Field(default=None, description="Defaults to the key's user; no other user is allowed")
    class_time: time | None = Field(
        default=None, description="Class start, HH:MM local time in the box's zone; needed without execute_at"
    )
    execute_at: datetime | None = Field(
        default=None,
        description="When to fire: ISO 8601 with an offset, or epoch milliseconds. "
        "Computed from the box's booking window when absent.",
    )

    @field_validator("class_time", mode="before")
    @classmethod
    def _check_time(cls, value: Any) -> time | None:
        return None if value is None else parse_time("class_time", value)

    @field_validator("execute_at", mode="before")
    @classmethod
    def _check_execute_at(cls, value: Any) -> datetime | None:
        return None if value is None else parse_instant("execute_at", value)


class PrebookingPatch(_Request):
    execute_at: datetime = Field(description="New firing instant: ISO 8601 with an offset, or epoch milliseconds")

    @field_validator("execute_at", mode="before")
    @classmethod
    def _check_execute_at(cls, value: Any) -> datetime:
        return parse_instant("execute_at", value)


class BookingCreate(_ClassFields):
    """A booking to try now; a too-early response turns it into a prebooking."""

    class_time: time | None = Field(
        default=None,
        description="Class start, HH:MM local time; looked up on AimHarder when absent and the class is not open yet",
    )

    @field_validator("class_time", mode="before")
    @classmethod
    def _check_time(cls, value: Any) -> time | None:
        return None if value is None else parse_time("class_time", value)


class BoxPut(_Request):
    aimharder_id: str = Field(description="AimHarder's numeric box id, sent as `box` to /api/bookings")
    timezone: str = Field(default=DEFAULT_TIMEZONE, description="IANA zone of the box's class times")
    window_days: int | None = Field(default=None, ge=1, le=MAX_WINDOW_DAYS, description="Booking opens this many calendar days before class start")
    window_hours: int | None = Field(default=None, ge=1, le=MAX_WINDOW_HOURS, description="Booking opens this many hours before class start")

    @field_validator("aimharder_id", mode="before")
    @classmethod
    def _check_aimharder_id(cls, value: Any) -> str | None:
        return _identifier("aimharder_id", value)

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        load_zone(value)
        return value

    @model_validator(mode="after")
    def _one_window(self) -> BoxPut:
        if self.window_days is not None and self.window_hours is not None:
            raise ValueError(
                f"window_days ({self.window_days}) and window_hours ({self.window_hours}) were both given: send only one"
            )
        if self.window_days is None and self.window_hours is None:
            raise ValueError("the booking window is missing: send window_days or window_hours")
        return self


class UserCreate(_Request):
    email: str = Field(max_length=320)


class KeyCreate(_Request):
    name: str | None = Field(default=None, max_length=100, description="A label to tell keys apart, such as 'laptop'")


class BoxOut(BaseModel):
    subdomain: str
    aimharder_id: str
    timezone: str
    window_days: int | None
    window_hours: int | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, box: Box) -> BoxOut:
        return cls.model_validate(box, from_attributes=True)


class PrebookingOut(BaseModel):
    id: UUID
    user_email: str
    box: str
    box_aimharder_id: str
    class_id: str
    class_day: date
    family_id: str | None
    insist: bool
    execute_at: datetime = Field(description="Firing instant, UTC")
    execute_at_ms: int
    execute_at_local: datetime = Field(description="Firing instant in the box's time zone")
    timezone: str = Field(description="The box's time zone, or UTC when the box is gone")
    status: PrebookingStatus
    book_state: int | None
    booking_id: str | None
    error_code: str | None
    error_message: str | None
    fired_at: datetime | None
    fire_latency_us: int | None
    response_ms: float | None
    attempts: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Prebooking, timezone: str | None) -> PrebookingOut:
        zone_name = timezone or "UTC"
        return cls(
            id=row.id,
            user_email=row.user_email,
            box=row.box_subdomain,
            box_aimharder_id=row.box_aimharder_id,
            class_id=row.class_id,
            class_day=row.class_day,
            family_id=row.family_id,
            insist=row.insist,
            execute_at=row.execute_at,
            execute_at_ms=datetime_to_ms(row.execute_at),
            execute_at_local=row.execute_at.astimezone(ZoneInfo(zone_name)),
            timezone=zone_name,
            status=row.status,
            book_state=row.book_state,
            booking_id=row.booking_id,
            error_code=row.error_code,
            error_message=row.error_message,
            fired_at=row.fired_at,
            fire_latency_us=row.fire_latency_us,
            response_ms=row.response_ms,
            attempts=row.attempts,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class PrebookingPage(BaseModel):
    items: list[PrebookingOut]
    total: int = Field(description="Number of matching prebookings across all pages")
    limit: int
    offset: int


class UserOut(BaseModel):
    email: str
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(email=user.email, created_at=user.created_at)


class KeyOut(BaseModel):
    id: UUID
    user_email: str
    prefix: str = Field(description="First characters of the key, to tell keys apart")
    name: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, row: ApiKey) -> KeyOut:
        return cls.model_validate(row, from_attributes=True)


class IssuedKeyOut(KeyOut):
    key: str = Field(description="The API key. It is shown only in this response and cannot be read again.")


class MeOut(BaseModel):
    admin: bool
    user_email: str | None
    key: KeyOut | None


class BookingOut(BaseModel):
    """AimHarder's response to a booking tried now."""

    outcome: str
    book_state: int | None
    booking_id: str | None
    error_code: str | None
    error_message: str | None
    aimharder: dict[str, Any] | None = Field(description="AimHarder's JSON response, unchanged")
