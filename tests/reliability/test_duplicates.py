"""Duplicate callbacks book once, and a callback replayed with another executeAt is rejected."""

from __future__ import annotations

import asyncio
import json

import pytest

from prebook_common.models import PrebookingStatus
from prebook_common.signatures import sign
from reliability.conftest import DeploymentFactory
from support.stack import CURRENT_KEY, now_ms

pytestmark = pytest.mark.timeout(180)

LEAD_MS = 3000
# QStash retries a delivery about 12 s after a failure; the repeat comes later than that.
REPEAT_AFTER_S = 15


@pytest.mark.slow
async def test_duplicates_now_and_later_book_once(start: DeploymentFactory) -> None:
    deployment = await start()
    execute_at_ms = now_ms() + LEAD_MS
    await deployment.open_class(8101, execute_at_ms)
    prebooking_id = await deployment.prebook(8101, execute_at_ms)
    body, headers = deployment.stack.callback(prebooking_id, execute_at_ms)

    async with deployment.gateway_client() as gateway:
        first = await asyncio.gather(
            *(gateway.post("/v1/qstash/prepare", content=body, headers=headers) for _ in range(5))
        )
        row = await deployment.final_prebooking(prebooking_id)
        await asyncio.sleep(REPEAT_AFTER_S)
        late = await gateway.post("/v1/qstash/prepare", content=body, headers=headers)

    assert [response.status_code for response in first] == [202] * 5
    assert sorted(response.json()["duplicate"] for response in first) == [False, True, True, True, True]
    assert late.status_code == 202, late.text
    assert late.json()["duplicate"] is True
    assert row.status == PrebookingStatus.BOOKED

    # The late duplicate changed nothing: give the executor time to skip it, then look again.
    await asyncio.sleep(1.0)
    requests = await deployment.book_requests()
    assert len(requests) == 1
    counts = await deployment.subject_counts()
    assert counts.get("prepare") == 1
    assert counts.get("completed") == 1
    again = await deployment.stack.get_prebooking(prebooking_id)
    assert again.status == PrebookingStatus.BOOKED
    assert again.booking_id == row.booking_id


async def test_replay_with_other_execute_at_rejected(start: DeploymentFactory) -> None:
    deployment = await start()
    execute_at_ms = now_ms() + LEAD_MS
    await deployment.open_class(8102, execute_at_ms)
    prebooking_id = await deployment.prebook(8102, execute_at_ms)
    body, headers = deployment.stack.callback(prebooking_id, execute_at_ms)

    # The body is edited and signed again, as someone holding the QStash signing key could.
    # The token inside still binds the prebooking to the first instant, so the check fails.
    replayed = json.loads(body)
    replayed["executeAt"] = execute_at_ms + 60_000
    replayed_body = json.dumps(replayed).encode()
    replayed_headers = {**headers, "Upstash-Signature": sign(replayed_body, deployment.stack.callback_url, CURRENT_KEY)}

    async with deployment.gateway_client() as gateway:
        rejected = await gateway.post("/v1/qstash/prepare", content=replayed_body, headers=replayed_headers)
        assert rejected.status_code == 401, rejected.text
        assert rejected.json()["check"] == "token"
        assert (await deployment.subject_counts()).get("prepare") is None

        accepted = await gateway.post("/v1/qstash/prepare", content=body, headers=headers)
    assert accepted.status_code == 202, accepted.text
    row = await deployment.final_prebooking(prebooking_id)
    assert row.status == PrebookingStatus.BOOKED
    assert (await deployment.subject_counts()).get("prepare") == 1
    assert len(await deployment.book_requests()) == 1
