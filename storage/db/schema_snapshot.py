"""The schema the migrations build, as `pg_dump --schema-only` prints it: `schema.sql`.

`storage/db/schema.sql` is that dump of a freshly migrated database (with the
tables the embedded mode creates for the collector and the Training Service), so
a reviewer reads the whole schema in one file and a migration's effect shows as a
diff of it. tests/integration/test_schema_snapshot.py compares it with the test
template database; after changing a migration, regenerate it with

    .venv/bin/python -m storage.db.schema_snapshot

pg_dump is the one shipped with the embedded server (pgserver), so the output does
not depend on what is installed on the machine. Its version lines are dropped:
the schema, not the tool's patch level, is what the snapshot records.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import anyio
import asyncpg

SNAPSHOT = Path(__file__).with_name("schema.sql")
_VERSION_LINES = ("-- Dumped from database version", "-- Dumped by pg_dump version")


def pg_dump_path() -> Path:
    """pg_dump of the embedded server's binaries."""
    from pgserver._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH) / "pg_dump"


def pg_dump_major() -> int:
    """The major version of that pg_dump (it refuses servers newer than itself)."""
    out = subprocess.run(
        [str(pg_dump_path()), "--version"], capture_output=True, text=True, check=True
    ).stdout
    return int(out.split()[-1].split(".")[0])


def dump_schema(dsn: str) -> str:
    """The schema of the database at `dsn`: no data, owners or grants, no version lines."""
    done = subprocess.run(
        [
            str(pg_dump_path()),
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            f"--dbname={dsn}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"pg_dump failed: {done.stderr.strip()}")
    return "".join(
        line
        for line in done.stdout.splitlines(keepends=True)
        if not line.startswith(_VERSION_LINES)
    )


async def _migrated_schema(admin_dsn: str, dsn_of: Callable[[str], str]) -> str:
    from storage.db.migrate import apply_migrations

    name = f"pp_schema_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            dsn = dsn_of(name)
            conn = await asyncpg.connect(dsn)
            try:
                await apply_migrations(conn, embedded=True)
            finally:
                await conn.close()
            return await anyio.to_thread.run_sync(dump_schema, dsn)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def main() -> None:
    """Write storage/db/schema.sql from a fresh embedded server and database."""
    from storage.db.embedded import EmbeddedPostgres

    with tempfile.TemporaryDirectory(prefix="pp-schema-") as data_dir:
        server = EmbeddedPostgres(data_dir, database="postgres")
        admin_dsn = server.start()
        try:
            schema = anyio.run(_migrated_schema, admin_dsn, server.dsn_for)
        finally:
            server.stop()
    SNAPSHOT.write_text(schema)
    print(f"wrote {SNAPSHOT} ({len(schema.splitlines())} lines)", file=sys.stderr)


if __name__ == "__main__":
    main()
