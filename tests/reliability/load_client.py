"""An open-loop HTTP/1.1 load generator for the gateway's callback, on keep-alive connections.

Requests are due at a fixed rate whatever the server does. Each one's latency is
measured from the instant it was due, so a slow server shows up as latency instead of
being hidden by a client that waits (the error known as coordinated omission). The
requests are serialized before the run, so the client spends its time on sockets and
not on JSON or JWTs.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

MAX_HEADER_BYTES = 64 * 1024


@dataclass
class Result:
    index: int
    # HTTP status, or "timeout" or "error: <type>" when no response came.
    status: int | str
    latency_s: float


@dataclass
class LoadReport:
    rate: float
    duration_s: float
    results: list[Result] = field(default_factory=list)
    sent_late_max_s: float = 0.0

    def statuses(self) -> Counter:
        return Counter(result.status for result in self.results)

    def latency_percentile_ms(self, percent: float, status: int | None = None) -> float | None:
        latencies = sorted(result.latency_s for result in self.results if status is None or result.status == status)
        if not latencies:
            return None
        index = min(len(latencies) - 1, round(percent / 100 * (len(latencies) - 1)))
        return latencies[index] * 1000

    def describe(self) -> str:
        statuses = ", ".join(f"{status}: {count}" for status, count in sorted(self.statuses().items(), key=str))
        accepted_p50 = self.latency_percentile_ms(50, 202)
        accepted_p99 = self.latency_percentile_ms(99, 202)
        return (
            f"{len(self.results)} requests due at {self.rate:.0f}/s over {self.duration_s:.0f} s; {statuses}; "
            f"202 latency p50 {accepted_p50 or 0:.1f} ms, p99 {accepted_p99 or 0:.1f} ms; "
            f"all latency p99 {self.latency_percentile_ms(99) or 0:.1f} ms"
        )


def serialize_post(host: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class _Connection:
    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> int:
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        try:
            self._writer.write(raw)
            head = await self._reader.readuntil(b"\r\n\r\n")
            status, length, close = _parse_head(head)
            await self._reader.readexactly(length)
        except BaseException:
            self.close()
            raise
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _parse_head(head: bytes) -> tuple[int, int, bool]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    close = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "connection" and value.strip().lower() == "close":
            close = True
    return status, length, close


async def run_load(
    host: str, port: int, requests: list[bytes], *, rate: float, connections: int, timeout_s: float
) -> LoadReport:
    """Send ``requests`` at ``rate`` per second over at most ``connections`` keep-alive connections."""
    report = LoadReport(rate=rate, duration_s=len(requests) / rate)
    queue: asyncio.Queue[tuple[int, float]] = asyncio.Queue()

    async def worker() -> None:
        connection = _Connection(host, port)
        while True:
            index, due = await queue.get()
            try:
                async with asyncio.timeout(max(due + timeout_s - time.monotonic(), 0.001)):
                    status: int | str = await connection.request(requests[index])
            except TimeoutError:
                status = "timeout"
                connection.close()
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                status = f"error: {type(exc).__name__}"
            report.results.append(Result(index, status, time.monotonic() - due))
            queue.task_done()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    start = time.monotonic() + 0.1
    for index in range(len(requests)):
        due = start + index / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            report.sent_late_max_s = max(report.sent_late_max_s, -delay)
        queue.put_nowait((index, due))

    await queue.join()
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    return report
