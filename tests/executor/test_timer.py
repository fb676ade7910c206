"""Precise waits: never before the target, and no sleep for a target already past."""

from __future__ import annotations

import asyncio
import time

import pytest
from recording_server import WAIT_S

from prebook_executor.timer import spin_until, wait_until


@pytest.mark.parametrize("guard_ns", [0, 500_000, 2_000_000])
@pytest.mark.parametrize("delay_ns", [1_000_000, 5_000_000, 30_000_000])
async def test_wait_until_never_returns_early(guard_ns: int, delay_ns: int) -> None:
    target_ns = time.time_ns() + delay_ns

    returned_ns = await asyncio.wait_for(wait_until(target_ns, guard_ns=guard_ns), WAIT_S)

    assert returned_ns >= target_ns
    assert time.time_ns() >= target_ns


async def test_wait_until_many_short_waits() -> None:
    for _ in range(50):
        target_ns = time.time_ns() + 200_000

        returned_ns = await asyncio.wait_for(wait_until(target_ns, guard_ns=100_000), WAIT_S)

        assert returned_ns >= target_ns


def test_wait_until_past_target_does_not_yield() -> None:
    target_ns = time.time_ns() - 1_000_000
    coroutine = wait_until(target_ns, guard_ns=2_000_000)

    # A coroutine that finishes on its first step never suspended in the event loop.
    with pytest.raises(StopIteration) as finished:
        coroutine.send(None)

    assert finished.value.value >= target_ns


async def test_wait_until_rejects_negative_guard() -> None:
    with pytest.raises(ValueError, match="guard_ns"):
        await wait_until(time.time_ns(), guard_ns=-1)


def test_spin_until_reaches_target() -> None:
    target_ns = time.time_ns() + 1_000_000

    returned_ns = spin_until(target_ns)

    assert returned_ns >= target_ns
    assert time.time_ns() >= target_ns
