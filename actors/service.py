"""Wiring: database, pool, streams, actors, supervisor. One `Service` per process."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
import asyncpg
import structlog
from anyio.abc import TaskStatus

from actors.state import ServiceState
from actors.supervisor import STAGE_OUTPUT, STAGE_WEB, ActorSpec, Supervisor
from actors.web_server import WebServer
from actors.webhooks import WebhookDispatcher, poker
from storage.config import Settings
from storage.database import Database, migrate, open_database, open_pool
from web.app import create_app
from web.context import AppContext

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class ServiceOptions:
    dashboard: bool = False
    demo: bool = False


@dataclass(slots=True)
class Service:
    settings: Settings
    options: ServiceOptions = field(default_factory=ServiceOptions)
    state: ServiceState = field(default_factory=ServiceState)
    supervisor: Supervisor = field(init=False)
    database: Database | None = None
    pool: asyncpg.Pool | None = None
    app_context: AppContext | None = None

    def __post_init__(self) -> None:
        self.supervisor = Supervisor(self.state)
        self.state.demo = self.options.demo

    @property
    def web_port(self) -> int | None:
        """The bound API port (useful when configured as 0 in tests)."""
        if "web" not in self.supervisor.actor_names:
            return None
        server: WebServer = self.supervisor.actor("web")
        return server.bound_port

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        settings = self.settings
        self.database = await open_database(settings)
        try:
            applied = await migrate(self.database.dsn, embedded=settings.embedded)
            log.info("database_ready", embedded=settings.embedded, migrations_applied=applied)
            self.pool = await open_pool(settings, self.database.dsn)
            try:
                self.app_context = AppContext(settings=settings, pool=self.pool, state=self.state)
                await self.supervisor.run(self._actor_specs(), task_status=task_status)
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    await self.pool.close()
        finally:
            with anyio.CancelScope(shield=True):
                await self.database.close()

    async def shutdown(self) -> None:
        await self.supervisor.shutdown(self.settings.shutdown_deadline_seconds)

    def _actor_specs(self) -> list[ActorSpec]:
        assert self.app_context is not None
        context = self.app_context
        settings = self.settings
        specs: list[ActorSpec] = []
        pool = self.pool
        assert pool is not None
        # Predictors poke the running dispatcher (whichever instance) after committing.
        context.services["webhooks_poke"] = poker(self.supervisor)
        specs.append(
            ActorSpec(
                "webhooks", lambda: WebhookDispatcher.from_settings(settings, pool), STAGE_OUTPUT
            )
        )
        specs.append(
            ActorSpec(
                "web",
                lambda: WebServer(create_app(context), settings.api_host, settings.api_port),
                STAGE_WEB,
            )
        )
        return specs
