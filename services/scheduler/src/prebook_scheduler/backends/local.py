"""The ``local`` backend: the schedule row is the schedule.

``prebook_scheduler.delivery`` sends each due row as QStash would. Scheduling only names
the message, and cancelling is the row's move to ``cancelled``, which the caller
commits, because the delivery loop sends pending rows only.
"""

from __future__ import annotations

from prebook_common.models import Schedule
from prebook_scheduler.wake_up import WakeUp

__all__ = ["LocalBackend", "local_message_id"]


def local_message_id(wake_up: WakeUp) -> str:
    """``Upstash-Message-Id`` of a local delivery: one per schedule row, kept across retries."""
    return f"local_{wake_up.schedule_id}"


class LocalBackend:
    name = "local"

    async def schedule(self, wake_up: WakeUp) -> str:
        return local_message_id(wake_up)

    async def cancel(self, schedule: Schedule) -> None:
        # Nothing is registered outside the row, which the caller marks cancelled.
        return None
