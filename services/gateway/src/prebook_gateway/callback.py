"""``POST /v1/qstash/prepare``: verify a QStash delivery and hand it to the executor.

The checks run in this order, each with its status when it fails:

1. callbacks in flight, at most PREBOOK_MAX_CALLBACKS_IN_FLIGHT (503, so QStash retries);
2. body size (413);
3. ``Upstash-Signature`` (401);
4. body shape (489, since a retry cannot fix it);
5. prebooking token (401);
6. the prebooking's row in the database (489 when there is none);
7. the publish to JetStream (503 when NATS is unavailable, so QStash retries).

The route responds 202 without waiting for the opening. The database check only turns
a callback for an unknown prebooking into a clear error. When the database does not
respond within ``DATABASE_CHECK_TIMEOUT_S``, the callback is published anyway, because
the signature and the token already prove it genuine, and the executor skips a
prebooking it cannot find.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from prebook_common.errors import PublishError, SignatureError, TokenError
from prebook_common.events import PrebookingPrepare
from prebook_common.token import verify_token
from prebook_gateway.body_limit import BodyTooLarge, read_body
from prebook_gateway.callback_body import CallbackBody
from prebook_gateway.error_responses import error_responses
from prebook_gateway.state import GatewayState
from prebook_gateway.throttled_log import ThrottledLog
from prebook_gateway.traced_publish import publish_traced

logger = logging.getLogger(__name__)

DATABASE_CHECK_TIMEOUT_S = 1.0
# Failed database checks, shed callbacks and bodies too large, each logged at most once every 10 s.
_database_errors = ThrottledLog(logger, 10.0)
_shed = ThrottledLog(logger, 10.0)
_too_large = ThrottledLog(logger, 10.0)

router = APIRouter(tags=["qstash"])

NON_RETRYABLE = {"Upstash-NonRetryable-Error": "true"}
CALLBACK_PATH = "/v1/qstash/prepare"


def _error(status_code: int, error: str, detail: str, headers: dict[str, str] | None = None, **extra) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code=status_code, headers=headers)


# GatewayApp serves this path with callback_fast_path.serve_callback, which calls this
# same handler; the route declares it for the OpenAPI document.
@router.post(
    CALLBACK_PATH,
    status_code=202,
    summary="QStash callback: prepare one prebooking for firing",
    responses=error_responses(401, 413, 489, 503),
)
async def prepare(request: Request) -> JSONResponse:
    received_at_ns = time.time_ns()
    state: GatewayState = request.app.state.gateway
    limit = state.settings.max_callbacks_in_flight
    if state.callbacks_in_flight >= limit:
        _shed.warning(
            "overloaded", "callback shed with 503: %d callbacks in flight, the maximum (PREBOOK_MAX_CALLBACKS_IN_FLIGHT)", limit
        )
        return _error(
            503, "overloaded",
            f"the gateway is handling {limit} callbacks already (PREBOOK_MAX_CALLBACKS_IN_FLIGHT); retry later",
            {"Retry-After": "1"},
        )

    state.callbacks_in_flight += 1
    try:
        return await _prepare(request, state, received_at_ns)
    finally:
        state.callbacks_in_flight -= 1


async def _prepare(request: Request, state: GatewayState, received_at_ns: int) -> JSONResponse:
    settings = state.settings
    try:
        raw = await read_body(request, settings.max_body_bytes)
    except BodyTooLarge as exc:
        _too_large.warning("body too large", "callback rejected with 413: %s", exc)
        return _error(413, "body too large", str(exc), NON_RETRYABLE)

    try:
        state.verifier.verify(request.headers.get("Upstash-Signature"), raw)
    except SignatureError as exc:
        logger.warning("callback rejected: signature check %s failed: %s", exc.check, exc)
        return _error(401, "invalid signature", str(exc), check=exc.check)

    try:
        body = CallbackBody.model_validate(json.loads(raw))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        logger.warning("callback rejected: body is not JSON: %s", exc)
        return _error(489, "invalid body", f"body is not valid UTF-8 JSON: {exc}", NON_RETRYABLE, field=None)
    except (ValueError, RecursionError) as exc:
        # ValueError: an integer of more than 4300 digits. RecursionError: arrays or objects nested too deep.
        logger.warning("callback rejected: body is not usable JSON: %s: %s", type(exc).__name__, exc)
        return _error(
            489, "invalid body", f"body is not usable JSON ({type(exc).__name__}): {exc}", NON_RETRYABLE, field=None
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        logger.warning("callback rejected: field %s invalid: %s", field, first["msg"])
        return _error(489, "invalid body", f"field {field}: {first['msg']}", NON_RETRYABLE, field=field)

    try:
        verify_token(settings.token_secret.get_secret_value(), body.prebookingId, body.executeAt, body.securityToken)
    except TokenError as exc:
        logger.warning("callback rejected for prebooking %s: %s", body.prebookingId, exc)
        return _error(401, "invalid securityToken", str(exc), check="token")

    if await _prebooking_exists(state, body.prebookingId) is False:
        logger.warning("callback rejected: prebooking %s not found in the database", body.prebookingId)
        return _error(
            489, "unknown prebooking",
            f"prebooking {body.prebookingId} not found in the database: its valid token means the row was "
            f"deleted, or the callback was made for another database with the same PREBOOK_TOKEN_SECRET "
            f"(check PREBOOK_DATABASE_URL)",
            NON_RETRYABLE,
        )
    verified_at_ns = time.time_ns()

    event = PrebookingPrepare(
        prebooking_id=body.prebookingId,
        box_subdomain=body.boxSubdomain,
        box_aimharder_id=body.boxAimharderId,
        execute_at_ms=body.executeAt,
        qstash_message_id=request.headers.get("Upstash-Message-Id"),
        retried=_retried(request.headers.get("Upstash-Retried")),
        received_at_ns=received_at_ns,
        verified_at_ns=verified_at_ns,
    )
    if not state.broker_connected():
        logger.warning("callback for prebooking %s not accepted: NATS is not connected", body.prebookingId)
        return _error(503, "NATS unavailable", "the event bus is not connected; QStash will retry", {"Retry-After": "2"})
    try:
        duplicate = await publish_traced(state.broker, settings, event, message_id=event.message_id)
    except PublishError as exc:
        logger.warning("callback for prebooking %s not accepted: %s", body.prebookingId, exc)
        return _error(503, "NATS unavailable", str(exc), {"Retry-After": "2"})

    logger.info(
        "callback accepted for prebooking %s executeAt %d (%s, verified in %d us, retried %d)",
        body.prebookingId, body.executeAt, "duplicate" if duplicate else "published",
        (verified_at_ns - received_at_ns) // 1000, event.retried,
    )
    return JSONResponse(
        {"accepted": True, "prebookingId": str(body.prebookingId), "duplicate": duplicate}, status_code=202
    )


async def _prebooking_exists(state: GatewayState, prebooking_id: UUID) -> bool | None:
    """Return whether the prebooking's row exists, or None when the database failed or timed out."""
    try:
        async with asyncio.timeout(DATABASE_CHECK_TIMEOUT_S):
            return await state.prebooking_lookup.exists(prebooking_id)
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        _database_errors.warning(
            "database check failed",
            "callback for prebooking %s published without the database check: %s: %s",
            prebooking_id, type(exc).__name__, exc,
        )
        return None


def _retried(header: str | None) -> int:
    try:
        return max(0, int(header or 0))
    except ValueError:
        return 0
