"""Run the real service in-process for a test, and stop it cleanly afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
from http_json import call_json

from actors.app.service import Service, ServiceOptions
from actors.scoring.batch_bus import BatchBus
from storage.config import Settings


@asynccontextmanager
async def running_service(
    settings: Settings, options: ServiceOptions | None = None, *, bus: BatchBus | None = None
) -> AsyncIterator[Service]:
    service = Service(settings, options or ServiceOptions())
    if bus is not None:
        service.bus = bus
    async with anyio.create_task_group() as tg:
        await tg.start(service.run)
        try:
            yield service
        finally:
            await service.shutdown()


def predictors_running(service: Service) -> int:
    """How many predictor actors the service runs now (one per active model it serves)."""
    return sum(1 for name in service.supervisor.actor_names if name.startswith("predictor-"))


async def service_get(service: Service, path: str) -> tuple[int, Any]:
    """GET `path` of the running service's API: (status, decoded JSON answer)."""
    async with aiohttp.ClientSession(f"http://127.0.0.1:{service.web_port}") as http:
        return await call_json(http, "GET", path)
