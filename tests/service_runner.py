"""Run the real service in-process for a test, and stop it cleanly afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from actors.batch_bus import BatchBus
from actors.service import Service, ServiceOptions
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
