"""FastStream's restart record for a pull fetch timeout becomes DEBUG; other errors stay ERROR."""

from __future__ import annotations

import logging

import pytest

from prebook_common.fetch_timeouts import FetchTimeoutFilter
from prebook_common.settings import Settings
from prebook_common.streams import FASTSTREAM_LOGGER, create_broker

RESTART = "Task-13 raised an exception, retrying...\nIf this behavior causes issues, ..."


def _record(error: BaseException, message: str = RESTART, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("prebook.faststream", level, __file__, 1, message, (), (type(error), error, None))


@pytest.fixture
def debug_enabled():
    logger = logging.getLogger("prebook.faststream")
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    yield
    logger.setLevel(previous)


def test_fetch_timeout_becomes_debug(debug_enabled) -> None:
    record = _record(TimeoutError())

    passed = FetchTimeoutFilter().filter(record)

    assert passed is True
    assert record.levelno == logging.DEBUG
    assert record.levelname == "DEBUG"
    assert record.exc_info is None
    assert "fetch timed out" in record.getMessage()


def test_fetch_timeout_dropped_without_debug() -> None:
    logger = logging.getLogger("prebook.faststream")
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        passed = FetchTimeoutFilter().filter(_record(TimeoutError()))
    finally:
        logger.setLevel(previous)

    assert passed is False


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (RuntimeError("boom"), RESTART),
        (ConnectionError("reset"), RESTART),
        (TimeoutError(), "handler failed"),
    ],
    ids=["other-error", "other-oserror", "other-message"],
)
def test_other_errors_stay_error(debug_enabled, error: BaseException, message: str) -> None:
    record = _record(error, message)

    passed = FetchTimeoutFilter().filter(record)

    assert passed is True
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None


def test_broker_logger_has_filter() -> None:
    create_broker(Settings(nats_url="nats://127.0.0.1:4222"))
    create_broker(Settings(nats_url="nats://127.0.0.1:4222"))

    filters = logging.getLogger(FASTSTREAM_LOGGER).filters

    assert sum(isinstance(existing, FetchTimeoutFilter) for existing in filters) == 1
