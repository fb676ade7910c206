"""The scheduler's FastStream application: event consumers, the backend and the delivery loop.

Each event subject has its own durable JetStream pull consumer (``scheduler-created``,
``scheduler-rescheduled``, ``scheduler-cancelled``) that all replicas share. Acks are
manual, so the policy is explicit:

- ack after the database commit, including events skipped on purpose;
- NACK with a growing delay when the database, NATS or QStash failed, or another
  replica changed the prebooking meanwhile, so the event comes back later;
- reject (terminate) an event whose payload does not parse, since it never will.

An exception not listed above leaves the message unacknowledged, so JetStream delivers
it again after ``PREBOOK_ACK_WAIT_S``.
"""

from __future__ import annotations

import logging
import os
import socket

from faststream import AckPolicy
from faststream.nats import NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage
from nats.js.api import ConsumerConfig
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from prebook_common.db import create_engine
from prebook_common.events import Event, PrebookingCancelled, PrebookingCreated, PrebookingRescheduled
from prebook_common.migrate import upgrade
from prebook_common.settings import Settings
from opentelemetry.sdk.trace import TracerProvider

from prebook_common import telemetry
from prebook_common.streams import connect_with_retry, create_broker, jstream
from prebook_scheduler.backends import BackendUnavailable, DeliveryBackend
from prebook_scheduler.backends.local import LocalBackend
from prebook_scheduler.backends.qstash import QStashBackend
from prebook_scheduler.delivery import LocalDelivery
from prebook_scheduler.handler import ScheduleHandler
from prebook_scheduler.leases import LeaseStore, new_owner
from prebook_scheduler.store import ScheduleConflict, ScheduleStore

__all__ = ["DURABLE_PREFIX", "Scheduler"]

logger = logging.getLogger(__name__)

DURABLE_PREFIX = "scheduler"
# Events handled at once per consumer.
EVENT_WORKERS = 8
NACK_BASE_DELAY_S = 0.5
NACK_MAX_DELAY_S = 30.0

# Failures after which the same event may succeed later.
TRANSIENT_ERRORS = (SQLAlchemyError, OSError, BackendUnavailable, ScheduleConflict)


class Scheduler:
    """The scheduler's broker, consumers, backends and delivery loop, started and stopped together.

    The local delivery loop runs with either backend, so rows that the local backend
    stored before a switch to QStash are still delivered.
    """

    def __init__(self, settings: Settings, *, owner: str | None = None, tracer_provider: TracerProvider | None = None) -> None:
        self.settings = settings
        self.broker: NatsBroker = create_broker(settings, middlewares=telemetry.nats_middlewares(tracer_provider))
        self.engine = create_engine(settings.database_url)

        self.backends: dict[str, DeliveryBackend] = {LocalBackend.name: LocalBackend()}
        if settings.qstash_token is not None or settings.resolved_scheduler_backend == QStashBackend.name:
            self.backends[QStashBackend.name] = QStashBackend(settings)
        self.backend = self.backends[settings.resolved_scheduler_backend]

        leases = LeaseStore(self.engine, owner or new_owner(socket.gethostname(), os.getpid()), settings.scheduler_lease_s)
        self.delivery = LocalDelivery(settings, leases)
        telemetry.instrument_httpx(self.delivery.http, tracer_provider)
        self.handler = ScheduleHandler(
            settings, ScheduleStore(self.engine), self.backend, self.backends, on_scheduled=self.delivery.wake
        )

        self._subscribe(PrebookingCreated, cancel=False)
        self._subscribe(PrebookingRescheduled, cancel=False)
        self._subscribe(PrebookingCancelled, cancel=True)

    def _subscribe(self, event_type: type[Event], *, cancel: bool) -> None:
        name = event_type.subject_name

        @self.broker.subscriber(
            self.settings.subject(name),
            stream=jstream(self.settings),
            durable=f"{DURABLE_PREFIX}-{name}",
            pull_sub=PullSub(batch_size=EVENT_WORKERS, timeout=1.0),
            config=ConsumerConfig(ack_wait=self.settings.ack_wait_s),
            max_workers=EVENT_WORKERS,
            ack_policy=AckPolicy.MANUAL,
        )
        async def on_event(message: NatsMessage) -> None:
            await self._consume(message, event_type, name, cancel)

    async def _consume(self, message: NatsMessage, event_type: type[Event], name: str, cancel: bool) -> None:
        try:
            event = event_type.model_validate_json(message.body)
        except ValidationError as exc:
            logger.error(
                "%s event rejected: payload is not a valid %s (%s)", name, event_type.__name__, exc.errors()[0]["msg"]
            )
            await message.reject()
            return

        delivered = message.raw_message.metadata.num_delivered
        logger.debug(
            "%s event for prebooking %s: executeAt %d ms, delivery %d",
            name, event.prebooking_id, event.execute_at_ms, delivered,
        )
        try:
            await self.handler.handle(event.prebooking_id, trigger=name, cancel=cancel)
        except TRANSIENT_ERRORS as exc:
            delay_s = min(NACK_BASE_DELAY_S * 2 ** (delivered - 1), NACK_MAX_DELAY_S)
            logger.warning(
                "%s event for prebooking %s failed on delivery %d, redelivering in %.1f s: %s: %s",
                name, event.prebooking_id, delivered, delay_s, type(exc).__name__, exc,
            )
            await message.nack(delay=delay_s)
            return
        await message.ack()

    async def start(self) -> None:
        await upgrade(self.engine)
        await connect_with_retry(self.broker, self.settings)
        await self.broker.start()
        self.delivery.start()
        logger.info(
            "scheduler started: backend %s, lead %.3f s, callback URL %s, consuming %s as durables %s-*",
            self.backend.name, self.settings.lead_s, self.settings.callback_url,
            ", ".join(self.settings.subject(name) for name in ("created", "rescheduled", "cancelled")), DURABLE_PREFIX,
        )

    async def stop(self) -> None:
        await self.broker.stop()
        await self.delivery.stop()
        qstash = self.backends.get(QStashBackend.name)
        if isinstance(qstash, QStashBackend):
            await qstash.aclose()
        await self.engine.dispose()
        logger.info("scheduler stopped")

