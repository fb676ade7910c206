"""The executor's FastStream application: one durable pull consumer on prepare events,
the executor's lease in the database, the takeover scan for claims of executors whose
lease ran out, and the background task that refreshes AimHarder sessions.

On stop, the executor fetches no more events and stops its takeover scan, releases the
claims of parked bookings that are due later than PREBOOK_EXECUTOR_HANDBACK_MARGIN_S so
that another executor takes them over, fires the rest, and then exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

import httpx
from faststream import AckPolicy
from faststream.nats import NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage
from nats.js.api import ConsumerConfig

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from prebook_common import telemetry
from prebook_common.aimharder_login import AimharderAuth
from prebook_common.aimharder_sessions import SessionRepository
from prebook_common.crypto import SecretBox
from prebook_common.db import create_autocommit_engine, create_engine, warm_pool
from prebook_common.events import PrebookingPrepare
from prebook_common.migrate import upgrade
from prebook_common.settings import Settings
from prebook_common.streams import connect_with_retry, create_broker, jstream
from prebook_executor.claims import ClaimStore
from prebook_executor.completion import CompletionWriter
from prebook_executor.consumer import PrepareHandler
from prebook_executor.fire_clock import FireClock
from prebook_executor.firing import Firer
from prebook_executor.leases import LeaseKeeper
from prebook_executor.session_locks import SessionLocks
from prebook_executor.sessions import SessionKeeper
from prebook_executor.takeover import TakeoverScanner

logger = logging.getLogger(__name__)

# Prepare events are claimed, loaded and staged this many at a time.
PREPARE_WORKERS = 16


def executor_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Executor:
    """The executor's broker, handler and resources, started and stopped together."""

    def __init__(self, settings: Settings, tracer_provider: TracerProvider | None = None) -> None:
        self.settings = settings
        self.broker: NatsBroker = create_broker(settings, middlewares=telemetry.nats_middlewares(tracer_provider))
        self.engine = create_engine(settings.database_url)
        # Claims and session reads are single statements, so they skip BEGIN and COMMIT.
        self.prepare_engine = create_autocommit_engine(settings.database_url, pool_size=PREPARE_WORKERS)
        self.http = httpx.AsyncClient(timeout=settings.aimharder_timeout_s)
        telemetry.instrument_httpx(self.http, tracer_provider)
        self.clock = FireClock(guard_ns=round(settings.guard_ms * 1_000_000))
        self.executor_id = executor_id()
        claims = ClaimStore(self.prepare_engine, self.executor_id)
        self.lease = LeaseKeeper(self.engine, self.executor_id, settings.executor_lease_s, on_lapse=self._check_own_claims)
        self.sessions = SessionKeeper(
            settings,
            SessionRepository(self.prepare_engine, SecretBox(settings.session_encryption_keys.get_secret_value())),
            AimharderAuth(settings.aimharder_login_url, self.http, timeout_s=settings.aimharder_timeout_s),
            SessionLocks(),
        )
        self._refresher: asyncio.Task[None] | None = None
        self.handler = PrepareHandler(
            settings,
            claims,
            self.sessions,
            Firer(settings, self.clock, self.http),
            CompletionWriter(
                settings, claims, self.broker, (tracer_provider or trace.get_tracer_provider()).get_tracer(telemetry.TRACER_NAME)
            ),
        )

        self.takeover = TakeoverScanner(settings, self.engine, self.executor_id, self.lease, self.handler)

        self.subscriber = self.broker.subscriber(
            settings.subject("prepare"),
            stream=jstream(settings),
            durable=settings.executor_durable,
            pull_sub=PullSub(batch_size=PREPARE_WORKERS, timeout=1.0),
            config=ConsumerConfig(
                ack_wait=settings.ack_wait_s,
                max_ack_pending=settings.executor_max_parked,
            ),
            max_workers=PREPARE_WORKERS,
            ack_policy=AckPolicy.MANUAL,
        )

        @self.subscriber
        async def on_prepare(event: PrebookingPrepare, message: NatsMessage) -> None:
            await self.handler(event, message)

    async def _check_own_claims(self) -> None:
        await self.takeover.check_own_claims()

    async def start(self) -> None:
        await upgrade(self.engine)
        await warm_pool(self.prepare_engine, PREPARE_WORKERS)
        await self.lease.start()
        await connect_with_retry(self.broker, self.settings)
        await self.broker.start()
        self.takeover.start()
        if self.settings.session_refresher_enabled:
            self._refresher = asyncio.create_task(self.sessions.run_refresher(), name="session-refresher")
        else:
            logger.info("session refresher disabled by PREBOOK_SESSION_REFRESHER_ENABLED=false")
        logger.info(
            "executor started: consuming %s as durable %s with executor id %s (lead %.1f s, guard %.1f ms, "
            "fire offset %.1f ms, lease %.1f s, takeover scan every %.2f s)",
            self.settings.subject("prepare"), self.settings.executor_durable, self.executor_id,
            self.settings.lead_s, self.settings.guard_ms, self.settings.fire_offset_ms, self.settings.executor_lease_s,
            self.settings.executor_takeover_scan_s,
        )

    async def stop(self) -> None:
        # 1. Take no more events and no more takeovers. Events fetched but not yet handled
        # are redelivered by JetStream after PREBOOK_ACK_WAIT_S.
        logger.info("executor stopping: fetching no more prepare events")
        self.handler.stop_taking()
        await self.subscriber.stop()
        await self.takeover.stop()
        await self.handler.wait_prepared()

        # 2. Hand back what another executor has time to prepare; fire the rest here.
        margin_s = self.settings.executor_handback_margin_s
        handed_back, staying = await self.handler.hand_back(margin_s)
        logger.info(
            "executor stopping: handed back %d parked bookings to other executors; firing %d due within %.1f s "
            "(PREBOOK_EXECUTOR_HANDBACK_MARGIN_S) before exiting",
            handed_back, staying, margin_s,
        )
        await self.handler.wait_parked()

        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await self.lease.stop()
        await self.broker.stop()
        await self.http.aclose()
        await self.prepare_engine.dispose()
        await self.engine.dispose()
        logger.info("executor stopped")
