"""``python -m prebook_simulator``, which runs ``prebook_simulator.serve``, as a subprocess."""

from __future__ import annotations

import asyncio
import re
import signal
import sys

import httpx

DEADLINE_S = 10.0
LISTENING = re.compile(r"AimHarder simulator listening on (http://127\.0\.0\.1:(\d+))")


async def read_until(stream: asyncio.StreamReader, pattern: re.Pattern[str], seen: list[str]) -> re.Match[str]:
    """Read log lines until one matches ``pattern``, within DEADLINE_S."""
    async with asyncio.timeout(DEADLINE_S):
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError(f"the simulator exited before logging {pattern.pattern!r}: {seen}")
            seen.append(line)
            match = pattern.search(line)
            if match:
                return match


async def test_serve_until_sigterm():
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "prebook_simulator", "--host", "127.0.0.1", "--port", "0",
        stderr=asyncio.subprocess.PIPE,
    )
    seen: list[str] = []
    try:
        listening = await read_until(process.stderr, LISTENING, seen)
        url = listening.group(1)
        async with httpx.AsyncClient(base_url=url) as client:
            config = await client.get("/_sim/config")
            answer = await client.post("/api/book", data={"id": "1", "day": "20261208", "insist": "0"})

        process.send_signal(signal.SIGTERM)
        await read_until(process.stderr, re.compile("stopped"), seen)
        async with asyncio.timeout(DEADLINE_S):
            return_code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert int(listening.group(2)) > 0
    assert config.status_code == 200
    assert answer.json() == {"logout": 1}
    assert return_code == 0
