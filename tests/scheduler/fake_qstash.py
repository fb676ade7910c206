"""The part of QStash's REST API that the scheduler's SDK calls use, recording each request.

``POST /v2/publish/{destination}`` returns ``{"messageId": ...}``. Like QStash, it returns
the first message's id for a publish with a known ``Upstash-Deduplication-Id``.
``DELETE /v2/messages/{id}`` returns 200 for a message it still has and 404 otherwise.
While ``failing_publishes`` is above zero, a publish returns 500 and counts it down.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from loopback_server import LoopbackServer


@dataclass(frozen=True)
class Published:
    message_id: str
    destination: str
    headers: dict[str, str]
    body: bytes


class FakeQStash:
    def __init__(self) -> None:
        self.published: list[Published] = []
        self.deleted: list[str] = []
        self.live: set[str] = set()
        self.failing_publishes = 0
        self.failed_publishes = 0
        self._by_deduplication_id: dict[str, str] = {}
        self._ids = itertools.count(1)
        self._server = LoopbackServer(
            Starlette(
                routes=[
                    Route("/v2/publish/{destination:path}", self._publish, methods=["POST"]),
                    Route("/v2/messages/{message_id}", self._delete, methods=["DELETE"]),
                ]
            )
        )

    @property
    def url(self) -> str:
        return self._server.base_url

    async def start(self) -> None:
        await self._server.start()

    async def aclose(self) -> None:
        await self._server.aclose()

    async def _publish(self, request: Request) -> JSONResponse:
        if self.failing_publishes > 0:
            self.failing_publishes -= 1
            self.failed_publishes += 1
            return JSONResponse({"error": "internal error"}, status_code=500)

        headers = {name.lower(): value for name, value in request.headers.items()}
        deduplication_id = headers.get("upstash-deduplication-id")
        if deduplication_id in self._by_deduplication_id:
            return JSONResponse({"messageId": self._by_deduplication_id[deduplication_id], "deduplicated": True})

        message_id = f"msg_fake{next(self._ids)}"
        if deduplication_id:
            self._by_deduplication_id[deduplication_id] = message_id
        self.live.add(message_id)
        self.published.append(
            Published(
                message_id=message_id,
                destination=request.path_params["destination"],
                headers=headers,
                body=await request.body(),
            )
        )
        return JSONResponse({"messageId": message_id})

    async def _delete(self, request: Request) -> Response:
        message_id = request.path_params["message_id"]
        if message_id not in self.live:
            return JSONResponse({"error": "message not found"}, status_code=404)
        self.live.discard(message_id)
        self.deleted.append(message_id)
        return Response(status_code=200)
