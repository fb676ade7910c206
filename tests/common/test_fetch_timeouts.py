"""FastStream's restart record for a pull fetch timeout becomes DEBUG; other errors stay ERROR."""

from __future__ import annotations

import logging

import pytest

from prebook_common.fetch_timeouts import FetchTimeoutFilter

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

    kept = FetchTimeoutFilter().filter(record)

    assert kept is True
    assert record.levelno == logging.DEBUG
    assert record.levelname == "DEBUG"
    assert record.exc_info is None
    assert "fetch timed out" in record.getMessage()


def test_fetch_timeout_dropped_without_debug() -> None:
    logger = logging.getLogger("prebook.faststream")
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        kept = FetchTimeoutFilter().filter(_record(TimeoutError()))
    finally:
        logger.setLevel(previous)

    assert kept is False


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

    kept = FetchTimeoutFilter().filter(record)

    assert kept is True
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
