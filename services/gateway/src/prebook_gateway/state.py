"""What the gateway's routes share: settings, the NATS broker, the database engine."""

from __future__ import annotations

from dataclasses import dataclass

from faststream.nats import NatsBroker
from sqlalchemy.ext.asyncio import AsyncEngine

from prebook_common.settings import Settings
from prebook_common.signatures import QStashVerifier
from prebook_common.streams import broker_connected


@dataclass
class GatewayState:
    settings: Settings
    broker: NatsBroker
    engine: AsyncEngine
    verifier: QStashVerifier

    def broker_connected(self) -> bool:
        return broker_connected(self.broker)
