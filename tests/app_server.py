"""Serve an aiohttp app on a free port of 127.0.0.1 for a test: the real API without
actors (routes and middleware), or a stand-in for a service the API calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from aiohttp import web

from actors.runtime.state import ServiceState
from storage.config import Settings
from web.app import create_app
from web.context import AppContext


@asynccontextmanager
async def serve(app: web.Application, **runner_options: Any) -> AsyncIterator[str]:
    """Yield the base URL of `app` on a port the system picked; cleaned up after.
    `runner_options` go to `web.AppRunner` (access_log=None, shutdown_timeout=…)."""
    runner = web.AppRunner(app, **runner_options)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def served(
    settings: Settings,
    pool: asyncpg.Pool,
    state: ServiceState | None = None,
    **runner_options: Any,
) -> AsyncIterator[str]:
    """Yield the base URL of the real API app (no actors, so nothing changes rows)."""
    app = create_app(AppContext(settings=settings, pool=pool, state=state or ServiceState()))
    async with serve(app, **runner_options) as base:
        yield base
