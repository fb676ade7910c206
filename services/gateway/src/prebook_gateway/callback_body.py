"""The JSON body that QStash delivers to ``POST /v1/qstash/prepare``."""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Instants after this (year 2100) are typos or attacks, never a class opening.
MAX_EXECUTE_AT_MS = 4_102_444_800_000


class CallbackBody(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    prebookingId: UUID
    executeAt: int = Field(gt=0, le=MAX_EXECUTE_AT_MS, description="Target instant, epoch milliseconds")
    boxSubdomain: str = Field(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9-]*$")
    boxAimharderId: str = Field(min_length=1, max_length=50)
    securityToken: str = Field(min_length=64, max_length=64, pattern=r"^[0-9a-f]{64}$")

    @field_validator("boxAimharderId", mode="before")
    @classmethod
    def _accept_number(cls, value: object) -> object:
        # QStash bodies written by the TypeScript system send the box id as a number.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value
