"""Load generator for the QStash callback, run as its own process by callback_throughput.py.

It signs one callback for each prebooking listed in the ``--prebookings`` JSON file
(pairs of id and executeAt), as QStash signs, prints ``sending``, then sends them over ``--connections``
keep-alive HTTP/1.1 connections as fast as the gateway responds. The requests are
pre-built bytes and the responses are parsed by hand, so the generator spends little
CPU per request. When every request has its response, it prints ``done`` and writes a
JSON report to ``--out``.

The signing key and the token secret come from the environment, as the gateway reads
them: PREBOOK_QSTASH_CURRENT_SIGNING_KEY and PREBOOK_TOKEN_SECRET.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import time
import uuid
from collections import Counter
from urllib.parse import urlsplit

from prebook_common.signatures import sign
from prebook_common.token import make_token

RESPONSE_TIMEOUT_S = 30.0


def build_requests(args: argparse.Namespace) -> list[tuple[str, bytes]]:
    """Return (prebooking id, request bytes) for each callback."""
    host = urlsplit(args.url).netloc
    signing_key = os.environ["PREBOOK_QSTASH_CURRENT_SIGNING_KEY"]
    token_secret = os.environ["PREBOOK_TOKEN_SECRET"]
    with open(args.prebookings) as listing:
        prebookings = json.load(listing)
    requests = []
    for prebooking_id, execute_at in prebookings:
        body = json.dumps(
            {
                "prebookingId": prebooking_id,
                "executeAt": execute_at,
                "boxSubdomain": "benchbox",
                "boxAimharderId": 4242,
                "securityToken": make_token(token_secret, prebooking_id, execute_at),
            }
        ).encode()
        signature = sign(body, args.callback_url, signing_key)
        head = (
            f"POST /v1/qstash/prepare HTTP/1.1\r\n"
            f"Host: {host}\r\n"
            f"Content-Type: application/json\r\n"
            f"Upstash-Signature: {signature}\r\n"
            f"Upstash-Message-Id: msg_{uuid.uuid4().hex}\r\n"
            f"Upstash-Retried: 0\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        requests.append((prebooking_id, head + body))
    return requests


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return status, body


async def run(args: argparse.Namespace) -> dict:
    requests = build_requests(args)
    parts = urlsplit(args.url)
    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)

    statuses: Counter[int] = Counter()
    accepted: list[str] = []
    duplicates = 0
    latencies_ns: list[int] = []
    errors: list[str] = []

    async def connection() -> None:
        nonlocal duplicates
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            while not queue.empty():
                prebooking_id, data = queue.get_nowait()
                started = time.perf_counter_ns()
                writer.write(data)
                status, body = await asyncio.wait_for(read_response(reader), RESPONSE_TIMEOUT_S)
                latencies_ns.append(time.perf_counter_ns() - started)
                statuses[status] += 1
                if status == 202:
                    accepted.append(prebooking_id)
                    if json.loads(body).get("duplicate"):
                        duplicates += 1
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            writer.close()

    print("sending", flush=True)
    started_ns = time.time_ns()
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.gather(*(connection() for _ in range(args.connections)))
    usage_after = resource.getrusage(resource.RUSAGE_SELF)
    finished_ns = time.time_ns()
    print("done", flush=True)
    cpu_s = (usage_after.ru_utime + usage_after.ru_stime) - (usage_before.ru_utime + usage_before.ru_stime)
    return {
        "sent": sum(statuses.values()),
        "statuses": {str(status): count for status, count in statuses.items()},
        "duplicates": duplicates,
        "accepted_ids": accepted,
        "latencies_ns": latencies_ns,
        "errors": errors,
        "started_ns": started_ns,
        "finished_ns": finished_ns,
        "cpu_s": cpu_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Send signed QStash callbacks to a Prebook gateway.")
    parser.add_argument("--url", required=True, help="gateway base URL, such as http://127.0.0.1:8000")
    parser.add_argument("--callback-url", required=True, help="URL the signatures are made for (the gateway's public callback URL)")
    parser.add_argument("--prebookings", required=True, help="JSON file with a [prebooking id, executeAt ms] pair per callback")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections used at once (default 32)")
    parser.add_argument("--out", required=True, help="path of the JSON report")
    args = parser.parse_args()

    report = asyncio.run(run(args))
    with open(args.out, "w") as out:
        json.dump(report, out)


if __name__ == "__main__":
    main()
