"""``POST /v1/qstash/prepare``: verify a QStash delivery and hand it to the executor.

Order of checks: body size, ``Upstash-Signature`` (401), body shape (489, since a retry
cannot fix it), prebooking token (401), then the publish to JetStream (503 when NATS is
unavailable, so QStash retries). The route answers 202 without waiting for the opening.
"""

from __future__ import annotations

import json
import logging
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from prebook_common.errors import PublishError, SignatureError, TokenError
from prebook_common.events import PrebookingPrepare
from prebook_common.streams import publish_event
from prebook_common.token import verify_token
from prebook_gateway.body_limit import BodyTooLarge, read_body
from prebook_gateway.callback_body import CallbackBody
from prebook_gateway.state import GatewayState

logger = logging.getLogger(__name__)

router = APIRouter(tags=["qstash"])

NON_RETRYABLE = {"Upstash-NonRetryable-Error": "true"}


def _error(status_code: int, error: str, detail: str, headers: dict[str, str] | None = None, **extra) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code=status_code, headers=headers)


@router.post(
    "/v1/qstash/prepare",
    status_code=202,
    summary="QStash callback: prepare one prebooking for firing",
    responses={401: {}, 413: {}, 489: {}, 503: {}},
)
async def prepare(request: Request) -> JSONResponse:
    received_at_ns = time.time_ns()
    state: GatewayState = request.app.state.gateway
    settings = state.settings

    try:
        raw = await read_body(request, settings.max_body_bytes)
    except BodyTooLarge as exc:
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
        duplicate = await publish_event(state.broker, settings, event, message_id=event.message_id)
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


def _retried(header: str | None) -> int:
    try:
        return max(0, int(header or 0))
    except ValueError:
        return 0
