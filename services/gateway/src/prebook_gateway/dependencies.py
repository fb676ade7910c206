"""FastAPI dependencies shared by the REST routes."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request
from sqlmodel.ext.asyncio.session import AsyncSession

from prebook_gateway.state import GatewayState


def gateway_state(request: Request) -> GatewayState:
    return request.app.state.gateway


async def db_session(request: Request) -> AsyncIterator[AsyncSession]:
    """Yield a database session for one request and close it after the response."""
    state: GatewayState = request.app.state.gateway
    async with state.sessions() as session:
        yield session
