"""Numbered `.sql` migrations, applied once each, under an advisory lock.

Two processes starting at the same time must not both apply a migration: the
lock serialises them, and the second finds the work recorded and does nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import structlog

log = structlog.get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Arbitrary but fixed: "pump-predictor migrations".
ADVISORY_LOCK_KEY = 0x70756D70_6D696772 & 0x7FFFFFFFFFFFFFFF


@dataclass(frozen=True, slots=True)
class Migration:
    version: str  # "0001" or "embedded/0001"
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(*, embedded: bool, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Embedded foreign tables first (our migrations reference coin_metrics), then ours.

    `directory` is another set of migration files in the same layout: the upgrade
    test and benchmark build an old schema from the files as they were."""
    sets: list[tuple[str, Path]] = []
    if embedded:
        sets.append(("embedded/", directory / "embedded"))
    sets.append(("", directory))
    found: list[Migration] = []
    for prefix, folder in sets:
        for path in sorted(folder.glob("[0-9][0-9][0-9][0-9]_*.sql")):
            number, _, rest = path.stem.partition("_")
            found.append(Migration(prefix + number, rest, path.read_text()))
    return found


async def apply_migrations(
    conn: asyncpg.Connection, *, embedded: bool, directory: Path = MIGRATIONS_DIR
) -> list[str]:
    """Apply what is missing; return the versions applied by this call."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    text PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        done = {r["version"]: r["checksum"] for r in rows}
        for migration in discover(embedded=embedded, directory=directory):
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    log.warning(
                        "migration_changed_after_apply",
                        version=migration.version,
                        name=migration.name,
                    )
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            applied_now.append(migration.version)
            log.info("migration_applied", version=migration.version, name=migration.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    return applied_now
