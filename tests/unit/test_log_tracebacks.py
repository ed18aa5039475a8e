"""Console log lines mask secrets inside tracebacks too.

An operator reads the console format; asyncpg and aiohttp errors quote the DSN
or URL they failed on, and the console renderer formats the exception after
every other processor has run.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
import structlog
from log_capture import service_logs

SECRET = "hunter2-S3cret"
DSN = f"postgresql://pump:{SECRET}@db.internal:5432/pump"


@pytest.fixture
def console_logs() -> Iterator[io.StringIO]:
    with service_logs("console") as buffer:
        yield buffer


def _fail(dsn: str) -> None:
    token = f"tok-{SECRET}"  # a local a locals dump would print
    raise ConnectionError(f"could not connect to {dsn} (token={token})")


def test_console_tracebacks_from_structlog_and_stdlib_are_masked(
    console_logs: io.StringIO,
) -> None:
    try:
        _fail(DSN)
    except ConnectionError:
        structlog.get_logger().exception("database_unreachable")
        logging.getLogger("asyncpg.pool").exception("pool failed")
    text = console_logs.getvalue()
    assert text.count("Traceback (most recent call last)") == 2, text
    assert "ConnectionError: could not connect to postgresql://pump:***@db.internal" in text
    assert "token=***" in text, text
    assert SECRET not in text, text
