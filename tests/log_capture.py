"""The service's own log set-up, writing to a buffer a test reads, undone afterwards."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import structlog

from actors.runtime.logs import configure_logging


@contextmanager
def service_logs(log_format: str, level: str = "INFO") -> Iterator[io.StringIO]:
    """Configure logging as the service does (`log_format` "json" or "console") with
    stderr replaced by the buffer yielded; structlog and the root logger are restored
    after, so later tests log as before."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, root_level = list(root.handlers), root.level
    buffer = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stderr", buffer)
        configure_logging(level, log_format)
        try:
            yield buffer
        finally:
            structlog.configure(**saved)
            root.handlers[:] = handlers
            root.setLevel(root_level)
