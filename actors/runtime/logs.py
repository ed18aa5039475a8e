"""structlog set-up: JSON for machines, console for people; one context per actor."""

from __future__ import annotations

import io
import logging
import sys
from typing import TextIO

import structlog
from structlog.typing import EventDict, ExcInfo, WrappedLogger

from storage.masking import mask_mapping, mask_text


def mask_secrets(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """Last step before rendering: values under secret key names and secrets inside any
    text (URLs, DSNs, `token=` pairs, echoed error bodies) are masked in every line."""
    return mask_mapping(event)


def masked_traceback(sio: TextIO, exc_info: ExcInfo) -> None:
    """The console renderer formats exceptions after every processor has run, so its
    traceback (an asyncpg error quoting the DSN, a locals dump) needs its own masking.
    Plain text, no locals: colour codes inside a URL would hide it from the mask."""
    buffer = io.StringIO()
    structlog.dev.plain_traceback(buffer, exc_info)
    sio.write(mask_text(buffer.getvalue()))


def configure_logging(level: str = "INFO", fmt: str = "console") -> None:
    """structlog for our lines; the standard library's loggers (asyncpg, aiohttp,
    pgserver, warnings) go through the same processors and renderer, so under
    LOG_FORMAT=json every line on stderr is one JSON object (tracebacks included,
    as a field)."""
    numeric = getattr(logging, level.upper(), logging.INFO)
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=masked_traceback
        )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    # The console renderer prints exceptions itself (through `masked_traceback`).
    tail: list[structlog.typing.Processor] = [
        *([structlog.processors.format_exc_info] if fmt == "json" else []),
        mask_secrets,
        renderer,
    ]
    structlog.configure(
        processors=[*shared, *tail],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    logging.captureWarnings(True)
    # pgserver logs every pg_ctl command line at INFO; keep its warnings only.
    logging.getLogger("pgserver").setLevel(max(numeric, logging.WARNING))
