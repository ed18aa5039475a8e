"""The real web app served on 127.0.0.1 without actors, for tests of routes and middleware."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from aiohttp import web

from storage.config import Settings
from web.app import create_app
from web.context import AppContext


@asynccontextmanager
async def served(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[str]:
    """Yield the base URL of the app on a free port; the runner is cleaned up after."""
    runner = web.AppRunner(create_app(AppContext(settings=settings, pool=pool)))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def closed_port() -> int:
    """A port nothing listens on (bound then released, so connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
