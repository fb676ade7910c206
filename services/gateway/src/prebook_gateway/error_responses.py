"""The error responses that the OpenAPI document lists for each route.

Every error body has the ``error`` and ``detail`` fields of ``api_errors.py``; a 422 for
an invalid request adds ``field`` and ``errors``. Routers list the statuses that every
route of theirs can return, and each route adds its own with ``error_responses``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorOut(BaseModel):
    """An error: a short phrase, a sentence naming the fix, and fields that help the client act."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(examples=["not found"])
    detail: str = Field(examples=["prebooking 6f1c2b9e-4a55-4c1e-9d39-0b2f6f0c8a11 not found"])


class FieldErrorOut(BaseModel):
    field: str | None
    message: str


class ValidationErrorOut(ErrorOut):
    """A rejected request: ``field`` and ``detail`` name the first problem, ``errors`` lists them all."""

    field: str | None = None
    errors: list[FieldErrorOut] = []


_DESCRIPTIONS = {
    401: "Missing, unknown or revoked API key (or, on the QStash callback, an invalid signature or token)",
    403: "The API key may not act on this resource: another user's, or an admin route",
    404: "Not found",
    409: "Conflicts with the resource's current state",
    413: "Request body larger than PREBOOK_MAX_BODY_BYTES",
    422: "Invalid request: the body names the field and the value",
    424: "No AimHarder session stored, or AimHarder rejected it",
    489: "Invalid callback body; QStash does not retry it",
    502: "AimHarder unreachable or failing",
    503: "The gateway is overloaded or cannot reach NATS; retry later",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """Return the OpenAPI ``responses`` entries of ``statuses``, each with its error body schema."""
    return {
        status: {"model": ValidationErrorOut if status == 422 else ErrorOut, "description": _DESCRIPTIONS[status]}
        for status in statuses
    }
