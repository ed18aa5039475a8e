"""A released pool connection is handed on without a reset round trip (issue 23):
what a next holder could notice must still be clean."""

from __future__ import annotations

import asyncpg

from storage.db.pool import create_pool
from storage.models.model_import import model_lock

ADVISORY_LOCKS = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


async def test_a_transaction_left_open_is_rolled_back_before_the_connection_is_reused(
    db_dsn: str,
) -> None:
    pool = await create_pool(db_dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.execute("CREATE TEMP TABLE left_behind (x int)")
        async with pool.acquire() as conn:  # the same (only) connection
            assert not conn.is_in_transaction()
            found = await conn.fetchval("SELECT to_regclass('pg_temp.left_behind') IS NOT NULL")
            assert found is False
    finally:
        await pool.close()


async def test_a_model_lock_is_free_for_another_session_once_its_holder_is_done(
    db_dsn: str,
) -> None:
    pool = await create_pool(db_dsn, min_size=1, max_size=1)
    other = await asyncpg.connect(db_dsn)
    try:
        async with model_lock(pool, 7):
            assert await other.fetchval(ADVISORY_LOCKS) == 1
        assert await other.fetchval(ADVISORY_LOCKS) == 0
        async with model_lock(pool, 7):  # and the model can be locked again
            pass
        assert await other.fetchval(ADVISORY_LOCKS) == 0
    finally:
        await other.close()
        await pool.close()
