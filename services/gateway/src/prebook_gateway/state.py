"""The gateway's shared state: settings, the NATS broker, the database and HTTP clients."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

import httpx
from faststream.nats import NatsBroker
from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from prebook_common.crypto import SecretBox
from prebook_common.models import utcnow
from prebook_common.settings import Settings
from prebook_common.signatures import QStashVerifier
from prebook_common.streams import broker_connected
from prebook_gateway.prebooking_lookup import PrebookingLookup
from prebook_gateway.publishing import EventPublisher
from prebook_gateway.throttled_log import ThrottledLog


@dataclass
class GatewayState:
    settings: Settings
    broker: NatsBroker
    engine: AsyncEngine
    verifier: QStashVerifier
    sessions: async_sessionmaker[AsyncSession]
    # Client for AimHarder's box API (book now and the class lookup).
    aimharder_http: httpx.AsyncClient
    secret_box: SecretBox
    publisher: EventPublisher
    # Tracer of the QStash callback's request spans (callback_fast_path.py).
    tracer: trace.Tracer
    # Current time as an aware UTC datetime; tests replace it to pin "now".
    clock: Callable[[], datetime] = field(default=utcnow)
    # QStash callbacks being handled now, bounded by PREBOOK_MAX_CALLBACKS_IN_FLIGHT.
    callbacks_in_flight: int = 0
    # Rejected API keys, logged at most once per reason every 10 s.
    auth_rejections: ThrottledLog = field(
        default_factory=lambda: ThrottledLog(logging.getLogger("prebook_gateway.auth"), 10.0)
    )

    def broker_connected(self) -> bool:
        return broker_connected(self.broker)

    @cached_property
    def prebooking_lookup(self) -> PrebookingLookup:
        """Batched existence checks of prebookings on this state's database engine."""
        return PrebookingLookup(self.engine)
