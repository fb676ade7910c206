"""The ``PREBOOKINGS`` JetStream stream and the publishing of events to it."""

from __future__ import annotations

import asyncio
import logging

import nats.errors
import nats.js.errors
from faststream.exceptions import IncorrectState
from faststream.nats import JStream, NatsBroker
from nats.js.api import StorageType, StreamConfig

from prebook_common.errors import PublishError
from prebook_common.events import Event
from prebook_common.settings import Settings

logger = logging.getLogger(__name__)


def stream_config(settings: Settings) -> StreamConfig:
    return StreamConfig(
        name=settings.nats_stream,
        subjects=[f"{settings.nats_subject_prefix}.>"],
        storage=StorageType.FILE,
        duplicate_window=settings.nats_duplicate_window_s,
    )


def jstream(settings: Settings) -> JStream:
    """The stream as FastStream declares it for a subscriber."""
    return JStream(
        name=settings.nats_stream,
        subjects=[f"{settings.nats_subject_prefix}.>"],
        storage=StorageType.FILE,
        duplicate_window=settings.nats_duplicate_window_s,
    )


async def ensure_stream(broker: NatsBroker, settings: Settings) -> None:
    """Create the stream, or update it when it exists with another configuration."""
    js = broker.connection.jetstream()
    config = stream_config(settings)
    try:
        await js.add_stream(config=config)
    except nats.js.errors.BadRequestError:
        await js.update_stream(config=config)
    logger.debug("stream %s ready for subjects %s", config.name, config.subjects)


def create_broker(settings: Settings, **kwargs) -> NatsBroker:
    """A FastStream NATS broker that reconnects forever after the first connection."""
    return NatsBroker(
        settings.nats_url,
        # FastStream's per-message "Received"/"Processed" lines go through our handler at DEBUG.
        logger=logging.getLogger("faststream"),
        log_level=logging.DEBUG,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=settings.nats_publish_timeout_s,
        **kwargs,
    )


async def publish_event(
    broker: NatsBroker,
    settings: Settings,
    event: Event,
    *,
    message_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> bool:
    """Publish ``event`` to JetStream and wait for the stream's acknowledgement.

    Returns True when JetStream dropped it as a duplicate of ``message_id``. Raises
    PublishError when NATS is unreachable or does not acknowledge within
    ``nats_publish_timeout_s``.
    """
    subject = settings.subject(event.subject_name)
    all_headers = dict(headers or {})
    if message_id:
        all_headers["Nats-Msg-Id"] = message_id

    try:
        ack = await broker.publish(
            event.to_bytes(),
            subject,
            headers=all_headers,
            stream=settings.nats_stream,
            timeout=settings.nats_publish_timeout_s,
        )
    except (nats.errors.Error, asyncio.TimeoutError, OSError) as exc:
        raise PublishError(
            f"publishing {subject} failed ({type(exc).__name__}): is NATS reachable at the "
            f"configured PREBOOK_NATS_URL?"
        ) from exc

    return bool(getattr(ack, "duplicate", False))


async def connect_with_retry(broker: NatsBroker, settings: Settings, *, max_delay_s: float = 5.0) -> None:
    """Connect ``broker``, retrying with backoff until NATS answers.

    nats-py reconnects on its own once connected, but raises when the first connection
    fails; services started before NATS (as in ``docker compose up``) wait here instead.
    """
    delay_s = 0.2
    attempt = 1
    while True:
        try:
            await broker.connect()
        except (nats.errors.Error, OSError, asyncio.TimeoutError) as exc:
            logger.warning(
                "NATS at %s is not reachable (attempt %d, %s); retrying in %.1f s",
                settings.nats_url, attempt, type(exc).__name__, delay_s,
            )
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, max_delay_s)
            attempt += 1
            continue

        logger.info("connected to NATS at %s", settings.nats_url)
        return


def broker_connected(broker: NatsBroker) -> bool:
    """Whether ``broker`` has a live NATS connection right now."""
    try:
        return broker.connection.is_connected
    except IncorrectState:
        return False
