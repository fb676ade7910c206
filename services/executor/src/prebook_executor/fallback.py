"""Fallback that sends a request with httpx when its staged connection was lost."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx

from prebook_executor.http1 import StagedResponse
from prebook_executor.staging_errors import (
    ConnectFailed,
    ConnectionLost,
    ResponseTimeout,
)

__all__ = ["send_fresh"]

log = logging.getLogger(__name__)


async def send_fresh(
    url: str,
    *,
    method: str = "POST",
    headers: list[tuple[str, str]],
    body: bytes,
    timeout_s: float,
    client: httpx.AsyncClient,
) -> StagedResponse:
    """Send the request with ``client`` and return its response with ``fallback=True``.

    ``timeout_s`` bounds the whole exchange, connecting included. ``sent_ns`` is taken
    before httpx starts, so it includes the client's own overhead. The client adds its
    default headers, such as User-Agent, so the bytes differ from the staged request's.

    Raises ConnectFailed, ConnectionLost or ResponseTimeout, translated from httpx.
    """
    log.debug("Sending %s %s with httpx as a fallback", method, url)
    sent_ns = time.time_ns()
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream(method, url, headers=headers, content=body, timeout=timeout_s) as response:
                received_ns = time.time_ns()
                content = await response.aread()
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise ResponseTimeout(f"No complete response from {url} within {timeout_s} s (fallback)") from exc
    except httpx.ConnectError as exc:
        raise ConnectFailed(f"Connecting to {url} failed (fallback): {exc}") from exc
    except httpx.TransportError as exc:
        raise ConnectionLost(f"The fallback request to {url} failed: {exc}") from exc

    return StagedResponse(
        status_code=response.status_code,
        headers=response.headers.multi_items(),
        body=content,
        sent_ns=sent_ns,
        received_ns=received_ns,
        fallback=True,
    )
