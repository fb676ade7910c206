"""Delivery backends: who calls the gateway's callback at a prebooking's wake-up.

    DeliveryBackend (protocol)
    ├── LocalBackend    schedule rows that this service's delivery loop sends itself
    └── QStashBackend   messages published to QStash with ``Upstash-Not-Before``

Both deliver the same signed POST, so the gateway cannot tell them apart.
"""

from __future__ import annotations

from typing import Protocol

from prebook_common.errors import PrebookError
from prebook_common.models import Schedule
from prebook_scheduler.wake_up import WakeUp

__all__ = ["BackendUnavailable", "DeliveryBackend"]


class BackendUnavailable(PrebookError):
    """A backend could not be reached or failed, and the same call may succeed later."""


class DeliveryBackend(Protocol):
    name: str

    async def schedule(self, wake_up: WakeUp) -> str:
        """Arrange the callback for ``wake_up.wake_at`` and return its message id.

        The caller stores the message id in ``schedule.message_id`` and in the
        prebooking's ``schedule_id``. Raises BackendUnavailable on a transient failure.
        """
        ...

    async def cancel(self, schedule: Schedule) -> None:
        """Stop the delivery of ``schedule``.

        A message that was already delivered or deleted is not an error. Raises
        BackendUnavailable on a transient failure.
        """
        ...
