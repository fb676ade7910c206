"""SQLModel tables and the prebooking status machine.

A prebooking's status only moves forward::

    pending → scheduled → prepared → firing → booked | waitlisted | failed | missed

and ``cancelled`` is reachable from any status before ``firing``. Every status change is
a conditional UPDATE on the allowed previous statuses (see ``allowed_sources``), so two
processes that race for one prebooking cannot both win.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Column, DateTime, String, Text, TypeDecorator
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend.

    Postgres keeps the zone; SQLite stores naive UTC, which this type converts back to
    aware UTC on load so that comparisons never mix naive and aware values.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def ms_to_datetime(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)


def ns_to_datetime(epoch_ns: int) -> datetime:
    """UTC datetime of an epoch-nanosecond instant, to the microsecond."""
    seconds, nanoseconds = divmod(epoch_ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=nanoseconds // 1000)


def datetime_to_ms(value: datetime) -> int:
    return round(value.timestamp() * 1000)


class PrebookingStatus(StrEnum):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    PREPARED = "prepared"
    FIRING = "firing"
    BOOKED = "booked"
    WAITLISTED = "waitlisted"
    FAILED = "failed"
    MISSED = "missed"
    CANCELLED = "cancelled"


FINAL_STATUSES = frozenset(
    {
        PrebookingStatus.BOOKED,
        PrebookingStatus.WAITLISTED,
        PrebookingStatus.FAILED,
        PrebookingStatus.MISSED,
        PrebookingStatus.CANCELLED,
    }
)

_RANK = {
    PrebookingStatus.PENDING: 0,
    PrebookingStatus.SCHEDULED: 1,
    PrebookingStatus.PREPARED: 2,
    PrebookingStatus.FIRING: 3,
}


def allowed_sources(target: PrebookingStatus) -> frozenset[PrebookingStatus]:
    """Statuses from which a prebooking may move to ``target``."""
    if target is PrebookingStatus.CANCELLED:
        return frozenset({PrebookingStatus.PENDING, PrebookingStatus.SCHEDULED, PrebookingStatus.PREPARED})
    if target in FINAL_STATUSES:
        return frozenset(_RANK)
    return frozenset(status for status, rank in _RANK.items() if rank < _RANK[target])


class Prebooking(SQLModel, table=True):
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_email: str = Field(index=True, max_length=320)
    box_subdomain: str = Field(max_length=100)
    box_aimharder_id: str = Field(max_length=50)
    class_id: str = Field(max_length=50, description="AimHarder's id of the class session")
    class_day: date
    family_id: str | None = Field(default=None, max_length=50)
    insist: bool = False
    execute_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False, index=True))
    status: PrebookingStatus = Field(default=PrebookingStatus.PENDING, sa_column=Column(String(20), nullable=False, index=True))
    schedule_id: str | None = Field(default=None, max_length=200)

    # Outcome.
    book_state: int | None = None
    booking_id: str | None = Field(default=None, max_length=100)
    error_code: str | None = Field(default=None, max_length=100)
    error_message: str | None = Field(default=None, sa_column=Column(Text))
    fired_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    fire_latency_us: int | None = Field(default=None, sa_column=Column(BigInteger))
    response_ms: float | None = None
    attempts: int = 0

    # Executor claim: the JetStream stream sequence of the prepare message that claimed
    # the prebooking, so a redelivery of that same message may take over after a crash.
    claim_seq: int | None = Field(default=None, sa_column=Column(BigInteger))
    claimed_by: str | None = Field(default=None, max_length=200)

    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))

    @property
    def execute_at_ms(self) -> int:
        return datetime_to_ms(self.execute_at)


class ExecutorLease(SQLModel, table=True):
    """An executor's lease: while it runs, no other executor takes over that executor's claims.

    The executor renews ``expires_at`` every third of PREBOOK_EXECUTOR_LEASE_S. A claim
    (``Prebooking.claimed_by``) whose executor has no live lease may be taken over by
    a redelivery of the message that made it.
    """

    __tablename__ = "executor_lease"

    executor_id: str = Field(primary_key=True, max_length=200)
    expires_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class AimharderSession(SQLModel, table=True):
    __tablename__ = "aimharder_session"

    user_email: str = Field(primary_key=True, max_length=320)
    cookies_encrypted: str = Field(sa_column=Column(Text, nullable=False))
    token_encrypted: str | None = Field(default=None, sa_column=Column(Text))
    fingerprint: str | None = Field(default=None, max_length=200)
    # Login credentials, kept only when the user opts in to automatic re-login.
    username: str | None = Field(default=None, max_length=320)
    password_encrypted: str | None = Field(default=None, sa_column=Column(Text))
    auto_relogin: bool = False
    refresh_failures: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    refreshed_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))
    expires_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))


class Box(SQLModel, table=True):
    subdomain: str = Field(primary_key=True, max_length=100)
    aimharder_id: str = Field(max_length=50)
    timezone: str = Field(default="Europe/Madrid", max_length=64, description="IANA zone name")
    window_days: int | None = Field(default=None, description="Booking opens this many days before class start")
    window_hours: int | None = Field(default=None, description="Booking opens this many hours before class start")
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))


class User(SQLModel, table=True):
    __tablename__ = "app_user"

    email: str = Field(primary_key=True, max_length=320)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))


class ApiKey(SQLModel, table=True):
    """A bearer API key; only its SHA-256 is stored, never the key itself."""

    __tablename__ = "api_key"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_email: str = Field(foreign_key="app_user.email", index=True, max_length=320)
    key_hash: str = Field(max_length=64, unique=True, index=True, description="SHA-256 of the key, hex")
    prefix: str = Field(max_length=16, description="First characters of the key, to tell keys apart")
    name: str | None = Field(default=None, max_length=100)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))
    last_used_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))


class ScheduleStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    FAILED = "failed"


class Schedule(SQLModel, table=True):
    """When and how the gateway is woken for one prebooking.

    The ``local`` backend delivers due rows itself; ``qstash`` stores QStash's message
    id in ``message_id`` so that a cancel can delete the message.
    """

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    prebooking_id: uuid.UUID = Field(foreign_key="prebooking.id", unique=True, index=True)
    backend: str = Field(max_length=20)
    execute_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    wake_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False, index=True))
    status: ScheduleStatus = Field(default=ScheduleStatus.PENDING, sa_column=Column(String(20), nullable=False, index=True))
    message_id: str | None = Field(default=None, max_length=200)
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    locked_by: str | None = Field(default=None, max_length=200)
    locked_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    delivered_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime, nullable=False))
