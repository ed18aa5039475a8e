"""What every request handler can reach: settings, the pool, live state, services."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiohttp import web

from actors.runtime.state import ServiceState
from storage.config import Settings


@dataclass(slots=True)
class AppContext:
    settings: Settings
    pool: asyncpg.Pool
    state: ServiceState = field(default_factory=ServiceState)
    # Set by the service wiring: the object that imports / reloads models and the
    # one that predicts on demand. Handlers answer 503 when one is missing.
    services: dict[str, Any] = field(default_factory=dict)


CONTEXT = web.AppKey("context", AppContext)


def ctx(request: web.Request) -> AppContext:
    return request.app[CONTEXT]
