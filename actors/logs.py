"""structlog set-up: JSON for machines, console for people; one context per actor."""

from __future__ import annotations

import logging
import sys

import structlog
from structlog.typing import EventDict, WrappedLogger

from storage.masking import mask_mapping


def mask_secrets(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """Last step before rendering: values under secret key names and secrets inside any
    text (URLs, DSNs, `token=` pairs, echoed error bodies) are masked in every line."""
    return mask_mapping(event)


def configure_logging(level: str = "INFO", fmt: str = "console") -> None:
    numeric = getattr(logging, level.upper(), logging.INFO)
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            # The console renderer prints exceptions itself (prettier, no warning).
            *([structlog.processors.format_exc_info] if fmt == "json" else []),
            mask_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(
        level=numeric, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    # pgserver logs every pg_ctl command line at INFO; keep its warnings only.
    logging.getLogger("pgserver").setLevel(max(numeric, logging.WARNING))
