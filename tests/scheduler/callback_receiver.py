"""A QStash callback endpoint that checks each delivery with the official SDK and records it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from qstash import Receiver
from qstash.errors import SignatureError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from loopback_server import LoopbackServer

CALLBACK_PATH = "/v1/qstash/prepare"


@dataclass(frozen=True)
class Delivery:
    """One request that passed the signature check, and the status of its response."""

    message_id: str | None
    retried: str | None
    content_type: str | None
    body: dict[str, Any]
    received_ns: int
    status: int


@dataclass
class ScriptedResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)


class CallbackReceiver:
    """Serves ``POST /v1/qstash/prepare`` on 127.0.0.1.

    Each request must carry an ``Upstash-Signature`` that ``qstash.Receiver`` accepts for
    ``signed_url`` with the given keys. Others get 401, and their errors are kept in
    ``rejected``. Accepted ones get the responses in ``responses`` in order, then 202.
    """

    def __init__(self, *, current_key: str, next_key: str, signed_url: str | None = None) -> None:
        self._receiver = Receiver(current_signing_key=current_key, next_signing_key=next_key)
        self._signed_url = signed_url
        self.responses: list[ScriptedResponse] = []
        self.deliveries: list[Delivery] = []
        self.rejected: list[str] = []
        self._server = LoopbackServer(Starlette(routes=[Route(CALLBACK_PATH, self._prepare, methods=["POST"])]))

    @property
    def url(self) -> str:
        return self._server.base_url + CALLBACK_PATH

    @property
    def signed_url(self) -> str:
        return self._signed_url or self.url

    async def start(self) -> None:
        await self._server.start()

    async def aclose(self) -> None:
        await self._server.aclose()

    async def _prepare(self, request: Request) -> JSONResponse:
        received_ns = time.time_ns()
        raw = await request.body()
        try:
            self._receiver.verify(
                signature=request.headers.get("Upstash-Signature", ""), body=raw.decode(), url=self.signed_url
            )
        except SignatureError as exc:
            self.rejected.append(str(exc))
            return JSONResponse({"error": "invalid signature", "detail": str(exc)}, status_code=401)

        response = self.responses.pop(0) if self.responses else ScriptedResponse(202)
        self.deliveries.append(
            Delivery(
                message_id=request.headers.get("Upstash-Message-Id"),
                retried=request.headers.get("Upstash-Retried"),
                content_type=request.headers.get("Content-Type"),
                body=json.loads(raw),
                received_ns=received_ns,
                status=response.status,
            )
        )
        return JSONResponse({"status": response.status}, status_code=response.status, headers=response.headers)
