"""The executor raises its open-file limit for parked bookings' staged sockets."""

from __future__ import annotations

import logging
import resource

import pytest

from prebook_common.settings import Settings
from prebook_executor.file_limit import raise_open_file_limit


@pytest.fixture
def restore_limit():
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield limits
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)


def test_soft_limit_raised_to_hard(restore_limit) -> None:
    _, hard = restore_limit
    if hard == resource.RLIM_INFINITY or hard < 2:
        pytest.skip(f"hard open-file limit {hard} leaves nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard // 2, hard))

    soft = raise_open_file_limit(Settings(executor_max_parked=1, too_early_retries=0))

    assert soft == hard
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard


def test_low_limit_warns_with_settings(restore_limit, caplog: pytest.LogCaptureFixture) -> None:
    _, hard = restore_limit
    caplog.set_level(logging.WARNING, logger="prebook_executor.file_limit")
    too_many = (hard if hard != resource.RLIM_INFINITY else 10**9) + 1

    raise_open_file_limit(Settings(executor_max_parked=too_many, too_early_retries=3))

    messages = [record.getMessage() for record in caplog.records]
    assert any("PREBOOK_EXECUTOR_MAX_PARKED" in message for message in messages)
