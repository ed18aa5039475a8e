"""How far the intake has processed coin_metrics, read the one way every test reads it."""

from __future__ import annotations

import asyncpg


async def intake_cursor(conn: asyncpg.Connection) -> int:
    """The lowest shard cursor (every coin shard has its own intake_cursor row,
    'coin_metrics/<shard>'); 0 before the cursors first moved.

    A cursor moves only after every row of its shard up to it is predicted and
    committed, so a test that waits for it knows the rows it inserted are done with.
    """
    return int(
        await conn.fetchval(
            "SELECT coalesce(min(last_id), 0) FROM intake_cursor WHERE name LIKE 'coin_metrics/%'"
        )
    )


async def cursor_reached(conn: asyncpg.Connection, row_id: int) -> bool:
    """The intake has processed every coin_metrics row up to `row_id`."""
    return await intake_cursor(conn) >= row_id
