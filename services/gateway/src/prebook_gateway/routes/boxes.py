"""Boxes: ``/v1/boxes``.

A box is shared configuration: its time zone and booking window decide every user's
opening instants. So any key may read boxes, but only the admin key may create or
change one. A user key gets 403 on PUT.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from prebook_common.models import Box
from prebook_gateway.api_errors import ApiError
from prebook_gateway.error_responses import error_responses
from prebook_gateway.auth import Caller, authenticate, require_admin
from prebook_gateway.dependencies import db_session, gateway_state
from prebook_gateway.schemas import BoxOut, BoxPut, validate_subdomain
from prebook_gateway.state import GatewayState

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/boxes", tags=["boxes"], responses=error_responses(401, 422))


def _subdomain_or_422(subdomain: str) -> str:
    try:
        return validate_subdomain(subdomain)
    except ValueError as exc:
        raise ApiError(422, "invalid box", str(exc), field="subdomain") from exc


@router.put(
    "/{subdomain}",
    response_model=BoxOut,
    responses={201: {"model": BoxOut, "description": "Box created"}, **error_responses(403, 413)},
    summary="Create (201) or replace (200) a box's configuration (admin key)",
)
async def put_box(
    body: BoxPut,
    subdomain: str = Path(description="Box subdomain, as in https://{subdomain}.aimharder.com"),
    caller: Caller = Depends(require_admin),
    state: GatewayState = Depends(gateway_state),
    session: AsyncSession = Depends(db_session),
) -> JSONResponse:
    subdomain = _subdomain_or_422(subdomain)
    now = state.clock()

    box = await session.get(Box, subdomain)
    created = box is None
    if box is None:
        box = Box(subdomain=subdomain, aimharder_id=body.aimharder_id, created_at=now)
    box.aimharder_id = body.aimharder_id
    box.timezone = body.timezone
    box.window_days = body.window_days
    box.window_hours = body.window_hours
    box.updated_at = now
    session.add(box)
    await session.commit()

    logger.info(
        "box %s %s: aimharder_id %s, zone %s, window %s days / %s hours",
        subdomain, "created" if created else "updated", box.aimharder_id, box.timezone,
        box.window_days, box.window_hours,
    )
    return JSONResponse(BoxOut.of(box).model_dump(mode="json"), status_code=201 if created else 200)


@router.get("", response_model=list[BoxOut], summary="List the configured boxes")
async def list_boxes(
    caller: Caller = Depends(authenticate), session: AsyncSession = Depends(db_session)
) -> list[BoxOut]:
    boxes = await session.exec(select(Box).order_by(col(Box.subdomain)))
    return [BoxOut.of(box) for box in boxes]


@router.get("/{subdomain}", response_model=BoxOut, responses=error_responses(404), summary="One box's configuration")
async def get_box(
    subdomain: str, caller: Caller = Depends(authenticate), session: AsyncSession = Depends(db_session)
) -> BoxOut:
    box = await session.get(Box, _subdomain_or_422(subdomain))
    if box is None:
        raise ApiError(404, "not found", f"box {subdomain!r} not found: list the boxes with GET /v1/boxes")
    return BoxOut.of(box)
