"""Request body size limits: ``read_body`` for the QStash callback, and an ASGI middleware
that applies PREBOOK_MAX_BODY_BYTES to every route before any handler parses a body."""

from __future__ import annotations

import json
import logging

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prebook_gateway.throttled_log import ThrottledLog

logger = logging.getLogger(__name__)


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


class BodyLimitMiddleware:
    """Reject with 413 every HTTP request whose body is over ``max_body_bytes``.

    A declared Content-Length over the limit is rejected before a byte of the body is
    read. Otherwise the body is read here, at most ``max_body_bytes`` of it, and
    handed to the application in one piece, so a chunked upload cannot grow past the
    limit either.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self._rejections = ThrottledLog(logger, 10.0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._reject(scope, send, f"body of {declared} bytes is over the {self.max_body_bytes} byte limit")
            return

        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._reject(scope, send, f"body is over the {self.max_body_bytes} byte limit")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break

        body = b"".join(chunks)
        body_sent = False

        async def replay() -> Message:
            nonlocal body_sent
            if body_sent:
                return await receive()
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, send: Send, reason: str) -> None:
        self._rejections.warning("body too large", "request %s %s rejected: %s", scope["method"], scope["path"], reason)
        content = json.dumps(
            {"error": "body too large", "detail": f"{reason} (PREBOOK_MAX_BODY_BYTES): send a smaller body"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(content)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
