"""Fixtures for the libs/common tests: a clean environment, settings and engines."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from prebook_common.db import create_engine
from prebook_common.settings import Settings
from support.jetstream import NatsNames

# Variables that configure the test run itself. The Settings class ignores them.
_TEST_VARIABLE_PREFIX = "PREBOOK_TEST_"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """Environment without PREBOOK_ settings, in a directory without a `.env` file.

    Returns the monkeypatch, so a test can set the variables it needs.
    """
    for name in list(os.environ):
        if name.startswith("PREBOOK_") and not name.startswith(_TEST_VARIABLE_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


@pytest.fixture
def nats_settings(clean_env: pytest.MonkeyPatch, nats_url: str, nats_names: NatsNames) -> Settings:
    """Settings that point at the test NATS server and this test's stream and subjects."""
    return Settings(
        nats_url=nats_url,
        nats_stream=nats_names.stream,
        nats_subject_prefix=nats_names.subject_prefix,
        nats_duplicate_window_s=120.0,
        nats_publish_timeout_s=2.0,
    )


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """Engine on this test's fresh database, once per backend. Disposed after the test."""
    database_engine = create_engine(database_url)
    yield database_engine
    await database_engine.dispose()
