"""storage/db/schema.sql is what the migrations build (procrastinate keeps such a snapshot).

The test template database (migrated once per session, embedded tables included)
is dumped with the embedded server's pg_dump and compared with the snapshot, so a
migration that changes the schema changes schema.sql in the same commit, and a
reviewer sees the resulting tables, indexes and triggers in one diff.
"""

from __future__ import annotations

import difflib
import os

import anyio
import asyncpg
import pytest
from conftest import PgCluster

from storage.db.schema_snapshot import SNAPSHOT, dump_schema, pg_dump_major

REGENERATE = ".venv/bin/python -m storage.db.schema_snapshot"


async def test_schema_sql_is_the_schema_the_migrations_build(pg_cluster: PgCluster) -> None:
    assert pg_cluster.template is not None
    dsn = pg_cluster.dsn(pg_cluster.template)
    conn = await asyncpg.connect(dsn)
    try:
        server_major = int(await conn.fetchval("SHOW server_version_num")) // 10000
    finally:
        await conn.close()
    if os.environ.get("TEST_DATABASE_URL") and server_major != pg_dump_major():
        pytest.skip(
            f"TEST_DATABASE_URL runs PostgreSQL {server_major}; the snapshot is made with "
            f"the embedded server's pg_dump {pg_dump_major()}"
        )
    dumped = await anyio.to_thread.run_sync(dump_schema, dsn)
    recorded = SNAPSHOT.read_text()
    if dumped != recorded:
        diff = "".join(
            difflib.unified_diff(
                recorded.splitlines(keepends=True),
                dumped.splitlines(keepends=True),
                "storage/db/schema.sql",
                "migrated template database",
                n=1,
            )
        )
        pytest.fail(f"schema.sql differs from the migrated schema; run {REGENERATE}\n{diff[:4000]}")
