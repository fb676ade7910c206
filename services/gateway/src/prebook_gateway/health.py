"""``/healthz`` (the process is up) and ``/readyz`` (NATS and the database answer)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from prebook_common.db import ping
from prebook_gateway.state import GatewayState

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

READY_CHECK_TIMEOUT_S = 2.0


@router.get("/healthz", summary="Liveness: the process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: NATS and the database are reachable")
async def readyz(request: Request) -> JSONResponse:
    state: GatewayState = request.app.state.gateway
    checks = {
        "nats": "ok" if state.broker_connected() else "not connected",
        "database": await _database_check(state),
    }
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503)


async def _database_check(state: GatewayState) -> str:
    try:
        await asyncio.wait_for(ping(state.engine), READY_CHECK_TIMEOUT_S)
    except (SQLAlchemyError, OSError, asyncio.TimeoutError) as exc:
        logger.warning("readiness: database check failed: %s", type(exc).__name__)
        return f"unreachable ({type(exc).__name__})"
    return "ok"
