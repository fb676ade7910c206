"""The wake-up of one prebooking: when the gateway's callback is due and what it carries.

The callback is due ``lead_s`` seconds before the opening (``execute_at``), so the
executor has time to prepare. Its JSON body is the one the gateway's
``POST /v1/qstash/prepare`` accepts, with the prebooking token that binds it to one
prebooking and one instant.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prebook_common.models import Prebooking, datetime_to_ms
from prebook_common.token import make_token

__all__ = ["WakeUp", "callback_body", "encode_body", "lead_delta"]


def lead_delta(lead_s: float) -> timedelta:
    """Convert the lead to a timedelta of whole milliseconds, the precision of ``execute_at``."""
    return timedelta(milliseconds=round(lead_s * 1000))


@dataclass(frozen=True)
class WakeUp:
    """A callback to schedule for one prebooking, under the schedule row ``schedule_id``."""

    schedule_id: uuid.UUID
    prebooking_id: uuid.UUID
    execute_at: datetime
    wake_at: datetime
    box_subdomain: str
    box_aimharder_id: str

    @classmethod
    def for_prebooking(cls, prebooking: Prebooking, lead_s: float) -> WakeUp:
        return cls(
            schedule_id=uuid.uuid4(),
            prebooking_id=prebooking.id,
            execute_at=prebooking.execute_at,
            wake_at=prebooking.execute_at - lead_delta(lead_s),
            box_subdomain=prebooking.box_subdomain,
            box_aimharder_id=prebooking.box_aimharder_id,
        )

    @property
    def execute_at_ms(self) -> int:
        return datetime_to_ms(self.execute_at)

    @property
    def wake_at_ms(self) -> int:
        return datetime_to_ms(self.wake_at)

    def body(self, token_secret: str) -> dict[str, Any]:
        return callback_body(
            token_secret,
            prebooking_id=self.prebooking_id,
            execute_at_ms=self.execute_at_ms,
            box_subdomain=self.box_subdomain,
            box_aimharder_id=self.box_aimharder_id,
        )


def callback_body(
    token_secret: str,
    *,
    prebooking_id: uuid.UUID,
    execute_at_ms: int,
    box_subdomain: str,
    box_aimharder_id: str,
) -> dict[str, Any]:
    """Build the callback's JSON body, with the field names that the gateway expects."""
    return {
        "prebookingId": str(prebooking_id),
        "executeAt": execute_at_ms,
        "boxSubdomain": box_subdomain,
        "boxAimharderId": box_aimharder_id,
        "securityToken": make_token(token_secret, prebooking_id, execute_at_ms),
    }


def encode_body(body: dict[str, Any]) -> bytes:
    """Encode ``body`` as the exact bytes that are signed and sent."""
    return json.dumps(body, separators=(",", ":")).encode()
