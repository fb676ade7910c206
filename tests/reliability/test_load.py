"""2,000 callbacks per second for 60 s at one gateway: every accepted callback becomes exactly one prepare event.

Runs only when asked for, because it takes about three minutes:

    uv run pytest -m load tests/reliability/test_load.py -s

PREBOOK_LOAD_RATE and PREBOOK_LOAD_SECONDS change the rate and the duration, and
PREBOOK_LOAD_GATEWAY_WORKERS the gateway's worker processes (2 by default). The test
needs Postgres, where the prebooking rows are written in bulk. No executor runs, so the
prepare events stay on the stream to be counted. The numbers are printed; only the
accounting is asserted, because throughput depends on the machine.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from datetime import UTC, datetime

import asyncpg
import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from prebook_common.signatures import sign
from prebook_common.token import make_token
from reliability.conftest import DeploymentFactory
from reliability.load_client import run_load, serialize_post
from reliability.services import CLASS_DAY
from support.databases import to_asyncpg_dsn
from support.jetstream import NatsNames
from support.stack import BOX, BOX_ID, CURRENT_KEY, TOKEN_SECRET, now_ms

RATE = float(os.environ.get("PREBOOK_LOAD_RATE", "2000"))
SECONDS = float(os.environ.get("PREBOOK_LOAD_SECONDS", "60"))
GATEWAY_WORKERS = os.environ.get("PREBOOK_LOAD_GATEWAY_WORKERS", "2")
CONNECTIONS = 256
# Longer than any response time of a working gateway, shorter than a stuck one.
REQUEST_TIMEOUT_S = 30.0
FETCH_BATCH = 1000

pytestmark = [pytest.mark.load, pytest.mark.slow, pytest.mark.timeout(int(SECONDS * 3 + 300))]


async def _insert_prebookings(database_url: str, ids: list[uuid.UUID], execute_at_ms: int) -> None:
    execute_at = datetime.fromtimestamp(execute_at_ms / 1000, tz=UTC)
    now = datetime.now(UTC)
    rows = [
        (prebooking_id, f"load-{index}@example.com", BOX, BOX_ID, "9001", CLASS_DAY, False, execute_at, "scheduled", 0, now, now)
        for index, prebooking_id in enumerate(ids)
    ]
    connection = await asyncpg.connect(to_asyncpg_dsn(database_url))
    try:
        await connection.copy_records_to_table(
            "prebooking",
            records=rows,
            columns=[
                "id", "user_email", "box_subdomain", "box_aimharder_id", "class_id", "class_day", "insist",
                "execute_at", "status", "attempts", "created_at", "updated_at",
            ],
        )  # fmt: skip
    finally:
        await connection.close()


async def _prepare_ids(nats_url: str, names: NatsNames) -> Counter:
    """Count the prepare events on the stream by prebooking id."""
    client = await nats.connect(nats_url, connect_timeout=5)
    try:
        jetstream = client.jetstream(timeout=10)
        subscription = await jetstream.pull_subscribe(
            names.subject("prepare"), stream=names.stream,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE),
        )  # fmt: skip
        info = await jetstream.stream_info(names.stream, subjects_filter=names.subject("prepare"))
        expected = (info.state.subjects or {}).get(names.subject("prepare"), 0)
        counts: Counter = Counter()
        while sum(counts.values()) < expected:
            for message in await subscription.fetch(FETCH_BATCH, timeout=10):
                counts[json.loads(message.data)["prebooking_id"]] += 1
        return counts
    finally:
        await client.close()


async def test_callback_load_accounted(start: DeploymentFactory, database_url: str, nats_names: NatsNames) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("the load test writes its prebookings with Postgres COPY: set PREBOOK_TEST_POSTGRES_URL")
    # INFO, as in production: the tests' DEBUG logging alone costs the gateway a good part of its throughput.
    deployment = await start(executors=0, extra_env={"PREBOOK_LOG_LEVEL": "INFO", "PREBOOK_GATEWAY_WORKERS": GATEWAY_WORKERS})
    total = int(RATE * SECONDS)
    execute_at_ms = now_ms() + 3_600_000
    ids = [uuid.uuid4() for _ in range(total)]
    await _insert_prebookings(database_url, ids, execute_at_ms)

    host, port = "127.0.0.1", int(deployment.gateway_url.rsplit(":", 1)[1])
    url = deployment.stack.callback_url
    requests = []
    for prebooking_id in ids:
        body = json.dumps(
            {
                "prebookingId": str(prebooking_id),
                "executeAt": execute_at_ms,
                "boxSubdomain": BOX,
                "boxAimharderId": BOX_ID,
                "securityToken": make_token(TOKEN_SECRET, prebooking_id, execute_at_ms),
            }
        ).encode()
        headers = {"Content-Type": "application/json", "Upstash-Signature": sign(body, url, CURRENT_KEY, ttl_s=3600)}
        requests.append(serialize_post(f"{host}:{port}", "/v1/qstash/prepare", body, headers))

    report = await run_load(host, port, requests, rate=RATE, connections=CONNECTIONS, timeout_s=REQUEST_TIMEOUT_S)
    published = await _prepare_ids(deployment.nats_url, deployment.names)

    accepted = {str(ids[result.index]) for result in report.results if result.status == 202}
    statuses = report.statuses()
    print(report.describe())
    print(
        f"prepare events: {sum(published.values())} for {len(published)} prebookings; "
        f"{len(accepted)} accepted with 202; client sent up to {report.sent_late_max_s * 1000:.0f} ms late"
    )
    assert not [status for status in statuses if isinstance(status, int) and status >= 500 and status != 503]
    assert set(published.values()) <= {1}
    assert accepted <= set(published)
    # A callback whose response timed out may still have been published, but never one with a 4xx or 503.
    rejected = {str(ids[result.index]) for result in report.results if isinstance(result.status, int) and result.status != 202}
    assert not rejected & set(published)
    assert "Traceback" not in deployment.gateway.logs_since_start()
