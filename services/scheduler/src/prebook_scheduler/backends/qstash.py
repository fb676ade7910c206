"""The ``qstash`` backend: QStash calls the gateway at the wake-up.

Each schedule is one message published with the official SDK's async client.
``Upstash-Not-Before`` is the wake-up in whole epoch seconds, rounded down, because
QStash must not call later than the lead allows. ``Upstash-Deduplication-Id`` is
``{prebooking_id}-{execute_at_ms}``, so a publish repeated after a crash does not create
a second message. ``Upstash-Retries`` is ``PREBOOK_QSTASH_RETRIES``. A cancel deletes
the message.
"""

from __future__ import annotations

import asyncio
import logging
import re

import httpx
from qstash import AsyncQStash
from qstash.errors import QStashError

from prebook_common.errors import ConfigurationError
from prebook_common.models import Schedule, datetime_to_ms
from prebook_common.settings import Settings
from prebook_scheduler.backends import BackendUnavailable
from prebook_scheduler.wake_up import WakeUp

__all__ = ["QStashBackend", "deduplication_id"]

logger = logging.getLogger(__name__)

# The SDK's own HTTP timeout is 600 s, far past the JetStream ack wait, so every call is
# bounded here instead.
REQUEST_TIMEOUT_S = 10.0

# qstash 3.4.0 raises QStashError("Request failed with status: 404, body: ...") for any
# HTTP error, with the status only in the message.
_STATUS = re.compile(r"status: (\d{3})")


def deduplication_id(wake_up: WakeUp) -> str:
    return f"{wake_up.prebooking_id}-{wake_up.execute_at_ms}"


def _status_of(exc: QStashError) -> int | None:
    match = _STATUS.search(str(exc))
    return int(match.group(1)) if match else None


class QStashBackend:
    name = "qstash"

    def __init__(self, settings: Settings) -> None:
        if settings.qstash_token is None:
            raise ConfigurationError(
                "the qstash scheduler backend needs PREBOOK_QSTASH_TOKEN: set it, or set "
                "PREBOOK_SCHEDULER_BACKEND=local to deliver callbacks from this service"
            )
        self._settings = settings
        # The SDK's retries are off, because a failed publish is retried by redelivering
        # the event that requested it.
        self._client = AsyncQStash(settings.qstash_token.get_secret_value(), retry=False, base_url=settings.qstash_url)

    async def schedule(self, wake_up: WakeUp) -> str:
        settings = self._settings
        not_before_s = wake_up.wake_at_ms // 1000
        dedup_id = deduplication_id(wake_up)
        try:
            response = await asyncio.wait_for(
                self._client.message.publish_json(
                    url=settings.callback_url,
                    body=wake_up.body(settings.token_secret.get_secret_value()),
                    not_before=not_before_s,
                    deduplication_id=dedup_id,
                    retries=settings.qstash_retries,
                ),
                REQUEST_TIMEOUT_S,
            )
        except (QStashError, httpx.HTTPError, asyncio.TimeoutError) as exc:
            raise BackendUnavailable(
                f"publishing the callback of prebooking {wake_up.prebooking_id} to QStash at "
                f"{settings.qstash_url} failed ({type(exc).__name__}: {exc}). Check "
                f"PREBOOK_QSTASH_URL and PREBOOK_QSTASH_TOKEN"
            ) from exc

        logger.info(
            "QStash message %s published for prebooking %s: not before %d s (wake-up %d ms), "
            "deduplication id %s, retries %d%s",
            response.message_id, wake_up.prebooking_id, not_before_s, wake_up.wake_at_ms,
            dedup_id, settings.qstash_retries, ", deduplicated by QStash" if response.deduplicated else "",
        )
        return response.message_id

    async def cancel(self, schedule: Schedule) -> None:
        if not schedule.message_id:
            return

        try:
            await asyncio.wait_for(self._client.message.cancel(schedule.message_id), REQUEST_TIMEOUT_S)
        except QStashError as exc:
            if _status_of(exc) == 404:
                # QStash removes a message shortly after delivering it.
                logger.info(
                    "QStash message %s of prebooking %s not found: already delivered or deleted",
                    schedule.message_id, schedule.prebooking_id,
                )
                return
            raise BackendUnavailable(
                f"deleting QStash message {schedule.message_id} of prebooking {schedule.prebooking_id} "
                f"failed: {exc}"
            ) from exc
        except (httpx.HTTPError, asyncio.TimeoutError) as exc:
            raise BackendUnavailable(
                f"deleting QStash message {schedule.message_id} of prebooking {schedule.prebooking_id} "
                f"failed ({type(exc).__name__}: {exc}). Is QStash reachable at {self._settings.qstash_url}?"
            ) from exc

        logger.info(
            "QStash message %s of prebooking %s deleted (wake-up was %d ms)",
            schedule.message_id, schedule.prebooking_id, datetime_to_ms(schedule.wake_at),
        )

    async def aclose(self) -> None:
        # NOTE: qstash 3.4.0's AsyncQStash has no close method, so its private httpx
        # client is closed directly. Check this after upgrading the SDK.
        client = getattr(self._client.http, "_client", None)
        if isinstance(client, httpx.AsyncClient):
            await client.aclose()
