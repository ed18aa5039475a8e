"""Where the database comes from: `DB_DSN`, or the embedded server by default."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import asyncpg
import structlog

from storage.config import Settings
from storage.db.embedded import EmbeddedPostgres
from storage.db.migrate import apply_migrations
from storage.db.pool import connect, create_pool

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class Database:
    dsn: str
    embedded: EmbeddedPostgres | None

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        """Not started yet: the caller holds it before `start`, so a stop during the
        embedded server's start still finds it and stops what was started."""
        if settings.db_dsn:
            return cls(settings.db_dsn, None)
        return cls("", EmbeddedPostgres(settings.embedded_data_dir))

    async def start(self) -> None:
        if self.embedded is not None and not self.embedded.started:
            self.dsn = await anyio.to_thread.run_sync(self.embedded.start)

    async def close(self) -> None:
        if self.embedded is not None:
            await anyio.to_thread.run_sync(self.embedded.stop)


async def open_database(settings: Settings) -> Database:
    """Start the embedded server when no DSN is set; never touch foreign tables otherwise."""
    database = Database.from_settings(settings)
    await database.start()
    return database


async def migrate(dsn: str, *, embedded: bool) -> list[str]:
    conn = await connect(dsn)
    try:
        return await apply_migrations(conn, embedded=embedded)
    finally:
        await conn.close()


async def open_pool(settings: Settings, dsn: str) -> asyncpg.Pool:
    return await create_pool(
        dsn, min_size=settings.db_pool_min_size, max_size=settings.db_pool_max_size
    )
