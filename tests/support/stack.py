"""A running Prebook stack (simulator, gateway, executor as real processes) for end-to-end tests."""

from __future__ import annotations

import json
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import date

import httpx
from qstash import Receiver

from prebook_common.crypto import SecretBox
from prebook_common.db import engine_scope, session_factory
from prebook_common.models import AimharderSession, Prebooking, PrebookingStatus, ms_to_datetime
from prebook_common.signatures import sign
from prebook_common.token import make_token

TOKEN_SECRET = "e2e-token-secret-0123456789abcdef0123456789abcdef"
CURRENT_KEY = "sig_e2eCurrentKey0123456789abcdefghij"
NEXT_KEY = "sig_e2eNextKey0123456789abcdefghijklmn"
ENCRYPTION_KEY = "8kz3v9Yq8c1qgk0p0x2rV4x5Jm0Vh2zW6bq9t3G1e7Q="
BOX = "simbox"
BOX_ID = "4242"
PREBOOK = [sys.executable, "-m", "prebook.cli"]


@dataclass
class Stack:
    """The running services and how to reach them."""

    gateway_url: str
    sim_url: str
    database_url: str
    callback_url: str

    async def create_prebooking(self, *, user: str, class_id: str, class_day: date, execute_at_ms: int) -> uuid.UUID:
        """Store a scheduled prebooking and the user's AimHarder session, as the API would."""
        cookie = f"cookie-{uuid.uuid4().hex}"
        async with engine_scope(self.database_url) as engine:
            async with session_factory(engine)() as session:
                prebooking = Prebooking(
                    user_email=user,
                    box_subdomain=BOX,
                    box_aimharder_id=BOX_ID,
                    class_id=class_id,
                    class_day=class_day,
                    execute_at=ms_to_datetime(execute_at_ms),
                    status=PrebookingStatus.SCHEDULED,
                )
                session.add(prebooking)
                session.add(
                    AimharderSession(
                        user_email=user,
                        cookies_encrypted=SecretBox(ENCRYPTION_KEY).encrypt_json({"amhrdrauth": cookie, "PHPSESSID": "php1"}),
                    )
                )
                await session.commit()
                prebooking_id = prebooking.id

        async with httpx.AsyncClient(base_url=self.sim_url) as sim:
            response = await sim.post("/_sim/sessions", json={"user": user, "cookie": cookie})
            response.raise_for_status()
        return prebooking_id

    async def get_prebooking(self, prebooking_id: uuid.UUID) -> Prebooking | None:
        async with engine_scope(self.database_url) as engine:
            async with session_factory(engine)() as session:
                return await session.get(Prebooking, prebooking_id)

    def callback(self, prebooking_id: uuid.UUID, execute_at_ms: int) -> tuple[bytes, dict[str, str]]:
        """Body and headers of the call QStash makes, signed as QStash signs it."""
        body = json.dumps(
            {
                "prebookingId": str(prebooking_id),
                "executeAt": execute_at_ms,
                "boxSubdomain": BOX,
                "boxAimharderId": int(BOX_ID),
                "securityToken": make_token(TOKEN_SECRET, prebooking_id, execute_at_ms),
            }
        ).encode()
        signature = sign(body, self.callback_url, CURRENT_KEY)

        # The official SDK accepts the signature, so the gateway is tested on QStash's format.
        Receiver(current_signing_key=CURRENT_KEY, next_signing_key=NEXT_KEY).verify(
            signature=signature, body=body.decode(), url=self.callback_url
        )
        headers = {
            "Content-Type": "application/json",
            "Upstash-Signature": signature,
            "Upstash-Message-Id": f"msg_{uuid.uuid4().hex}",
            "Upstash-Retried": "0",
        }
        return body, headers


def now_ms() -> int:
    return time.time_ns() // 1_000_000
