"""Event payloads published on NATS JetStream.

Every payload carries a ``schema`` field (name and version), so a consumer can reject or
adapt an event from a newer publisher. Instants are epoch milliseconds (UTC).
"""

from __future__ import annotations

from typing import ClassVar, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field


class Event(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True)

    subject_name: ClassVar[str]

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class PrebookingPrepare(Event):
    """Request from the gateway to the executor to prepare and fire one prebooking."""

    subject_name: ClassVar[str] = "prepare"

    schema_: Literal["prebooking.prepare/1"] = Field(default="prebooking.prepare/1", alias="schema")
    prebooking_id: UUID
    box_subdomain: str
    box_aimharder_id: str
    execute_at_ms: int
    qstash_message_id: str | None = None
    retried: int = 0
    received_at_ns: int = Field(description="When the gateway received the callback, epoch ns")
    verified_at_ns: int | None = Field(default=None, description="When the gateway finished its checks, epoch ns")

    @property
    def message_id(self) -> str:
        """``Nats-Msg-Id`` of this event, so JetStream drops a duplicate callback."""
        return prepare_message_id(self.prebooking_id, self.execute_at_ms)


def prepare_message_id(prebooking_id: UUID | str, execute_at_ms: int) -> str:
    return f"{prebooking_id}:{execute_at_ms}"


class PrebookingCompleted(Event):
    """The executor stored a prebooking's final outcome."""

    subject_name: ClassVar[str] = "completed"

    schema_: Literal["prebooking.completed/1"] = Field(default="prebooking.completed/1", alias="schema")
    prebooking_id: UUID
    status: str
    outcome: str | None = None
    book_state: int | None = None
    booking_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    fired_at_ms: int | None = None
    fire_latency_us: int | None = None
    response_ms: float | None = None
    attempts: int = 0


class PrebookingCreated(Event):
    subject_name: ClassVar[str] = "created"

    schema_: Literal["prebooking.created/1"] = Field(default="prebooking.created/1", alias="schema")
    prebooking_id: UUID
    execute_at_ms: int


class PrebookingRescheduled(Event):
    """A prebooking's ``execute_at`` changed; its schedule must move with it."""

    subject_name: ClassVar[str] = "rescheduled"

    schema_: Literal["prebooking.rescheduled/1"] = Field(default="prebooking.rescheduled/1", alias="schema")
    prebooking_id: UUID
    execute_at_ms: int
    previous_execute_at_ms: int


class PrebookingCancelled(Event):
    subject_name: ClassVar[str] = "cancelled"

    schema_: Literal["prebooking.cancelled/1"] = Field(default="prebooking.cancelled/1", alias="schema")
    prebooking_id: UUID
    execute_at_ms: int
