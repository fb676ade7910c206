"""Reading a request body with a size limit, before anything parses it."""

from __future__ import annotations

from fastapi import Request


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """Return the raw body, or raise BodyTooLarge as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"body of {declared} bytes is over the {limit} byte limit (PREBOOK_MAX_BODY_BYTES)")

    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body is over the {limit} byte limit (PREBOOK_MAX_BODY_BYTES)")
        chunks.append(chunk)
    return b"".join(chunks)
