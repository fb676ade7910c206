"""The ``PREBOOKINGS`` JetStream stream and the publishing of events to it."""

from __future__ import annotations

import asyncio
import logging

import nats.errors
import nats.js.errors
from faststream.exceptions import IncorrectState
from faststream.nats import JStream, NatsBroker
from nats.js.api import StorageType, StreamConfig

from prebook_common import fetch_timeouts
from prebook_common.errors import PublishError
from prebook_common.events import Event
from prebook_common.settings import Settings

logger = logging.getLogger(__name__)

FASTSTREAM_LOGGER = "prebook.faststream"


def stream_config(settings: Settings) -> StreamConfig:
    return StreamConfig(
        name=settings.nats_stream,
        subjects=[f"{settings.nats_subject_prefix}.>"],
        storage=StorageType.FILE,
        duplicate_window=settings.nats_duplicate_window_s,
    )


def jstream(settings: Settings) -> JStream:
    """Build the stream as FastStream declares it for a subscriber."""
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
    """Create a FastStream NATS broker that keeps trying to connect and to reconnect.

    nats-py retries the first connection forever too (``max_reconnect_attempts=-1``),
    so connection failures reach the log only through the callbacks set here.
    """
    errors = _ConnectionErrorLog(settings.nats_url)
    fetch_timeouts.install(logging.getLogger(FASTSTREAM_LOGGER))
    broker = NatsBroker(
        settings.nats_url,
        # Not the "faststream" logger, which carries FastStream's own coloured handler.
        logger=logging.getLogger(FASTSTREAM_LOGGER),
        log_level=logging.DEBUG,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=settings.nats_publish_timeout_s,
        error_cb=errors.on_error,
        disconnected_cb=errors.on_disconnected,
        reconnected_cb=errors.on_reconnected,
        **kwargs,
    )
    errors.broker = broker
    return broker


class _ConnectionErrorLog:
    """Logs NATS connection trouble: the first error of a streak, then every 20th."""

    REPEAT_EVERY = 20

    def __init__(self, nats_url: str) -> None:
        self._url = nats_url
        self._streak = 0
        self.broker: NatsBroker | None = None

    async def on_error(self, error: Exception) -> None:
        self._streak += 1
        if self._streak == 1 or self._streak % self.REPEAT_EVERY == 0:
            logger.warning("NATS at %s: %s: %s (error %d in a row)", self._url, type(error).__name__, error, self._streak)

    async def on_disconnected(self) -> None:
        if self._stopping():
            logger.debug("disconnected from NATS at %s on shutdown", self._url)
            return
        logger.warning("disconnected from NATS at %s; reconnecting", self._url)

    def _stopping(self) -> bool:
        try:
            connection = self.broker.connection if self.broker is not None else None
        except IncorrectState:
            return True
        return connection is not None and (connection.is_closed or connection.is_draining)

    async def on_reconnected(self) -> None:
        self._streak = 0
        logger.info("reconnected to NATS at %s", self._url)


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
    except (nats.errors.Error, asyncio.TimeoutError, OSError, IncorrectState) as exc:
        raise PublishError(
            f"publishing {subject} failed ({type(exc).__name__}): is NATS reachable at the "
            f"configured PREBOOK_NATS_URL?"
        ) from exc

    return bool(getattr(ack, "duplicate", False))


async def connect_with_retry(broker: NatsBroker, settings: Settings) -> None:
    """Connect ``broker``, waiting as long as it takes for NATS to accept the connection.

    Services started before NATS (as in ``docker compose up``) wait here; the broker's
    error callback logs the failed attempts.
    """
    logger.info("connecting to NATS at %s", settings.nats_url)
    await broker.connect()
    logger.info("connected to NATS at %s", settings.nats_url)


def broker_connected(broker: NatsBroker) -> bool:
    """Return whether ``broker`` has a live NATS connection right now."""
    try:
        return broker.connection.is_connected
    except IncorrectState:
        return False
