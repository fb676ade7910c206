"""Serving ``POST /v1/qstash/prepare`` straight from ASGI, past FastAPI's middleware and routing.

The callback is the gateway's hot route: QStash sends one per prebooking a few seconds
before each opening, and many openings share an instant. Under FastAPI, the
OpenTelemetry ASGI middleware, Starlette's exception middlewares, the router and
FastAPI's request handling took about a third of the CPU of each callback. That was
measured with py-spy on the app driven in-process with 6,000 callbacks, on the 2-core
machine of ``bench/callback_throughput.py``.
``GatewayApp`` sends the callback to ``serve_callback`` instead, which keeps what that
stack did for it:

- a SERVER span named ``POST /v1/qstash/prepare``, the child of the caller's W3C trace
  context, so that the prepare event carries the request's trace on to the executor;
- 500 with a logged traceback for an unexpected exception;
- the body limit, applied by the route itself (``read_body``, 413).

The route stays declared in FastAPI (``callback.prepare``) for the OpenAPI document,
and both paths run the same handler.
"""

from __future__ import annotations

import logging

from fastapi import Request
from opentelemetry import propagate
from opentelemetry.trace import SpanKind, StatusCode
from starlette.requests import ClientDisconnect
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from prebook_gateway.callback import CALLBACK_PATH, prepare
from prebook_gateway.state import GatewayState

logger = logging.getLogger(__name__)

SPAN_NAME = f"POST {CALLBACK_PATH}"


def is_callback(scope: Scope) -> bool:
    """Return whether the ASGI request is the QStash callback."""
    return scope["type"] == "http" and scope["path"] == CALLBACK_PATH and scope["method"] == "POST"


async def serve_callback(state: GatewayState, scope: Scope, receive: Receive, send: Send) -> None:
    """Handle one callback request as an ASGI app, inside its SERVER span."""
    request = Request(scope, receive)
    parent = propagate.extract(request.headers)
    attributes = {"http.method": "POST", "http.route": CALLBACK_PATH, "http.target": CALLBACK_PATH}
    with state.tracer.start_as_current_span(
        SPAN_NAME, context=parent, kind=SpanKind.SERVER, attributes=attributes, set_status_on_exception=False
    ) as span:
        try:
            response: Response = await prepare(request)
        except ClientDisconnect:
            logger.debug("callback request abandoned: the client disconnected before sending its whole body")
            return
        except Exception:
            logger.exception("callback failed with an unexpected error; responding 500")
            response = PlainTextResponse("Internal Server Error", status_code=500)

        span.set_attribute("http.status_code", response.status_code)
        if response.status_code >= 500:
            span.set_status(StatusCode.ERROR)
        await response(scope, receive, send)

