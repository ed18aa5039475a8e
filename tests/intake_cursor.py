"""How far the intake has processed coin_metrics, read the one way every test reads it."""

from __future__ import annotations

import asyncpg


async def intake_cursor(conn: asyncpg.Connection) -> int:
    """The furthest `last_id` of the intake_cursor rows; 0 before the cursor first moved.

    The cursor moves only after every row up to it is predicted and committed, so a
    test that waits for it knows the rows it inserted are done with.
    """
    return int(await conn.fetchval("SELECT coalesce(max(last_id), 0) FROM intake_cursor"))


async def cursor_reached(conn: asyncpg.Connection, row_id: int) -> bool:
    """The intake has processed every coin_metrics row up to `row_id`."""
    return await intake_cursor(conn) >= row_id
