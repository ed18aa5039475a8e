"""The durable intake cursor: how far coin_metrics has been fully processed.

It only ever moves forward, and only after the predictions of every row up to
it are committed (the batcher writes it once all predictors acknowledged a
batch). A crash between the two re-processes a few rows, which idempotent
prediction writes absorb; it never skips one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

DEFAULT_NAME = "coin_metrics"


@dataclass(frozen=True, slots=True)
class Cursor:
    last_id: int
    last_timestamp: datetime | None
    updated_at: datetime


async def load(conn: asyncpg.Connection, name: str = DEFAULT_NAME) -> Cursor | None:
    row = await conn.fetchrow(
        "SELECT last_id, last_timestamp, updated_at FROM intake_cursor WHERE name = $1", name
    )
    if row is None:
        return None
    return Cursor(row["last_id"], row["last_timestamp"], row["updated_at"])


# How every cursor row moves: forward only; a move that carries no newer row's time
# (only skipped rows) keeps the old one. `excluded` is the row the INSERT proposed.
MOVE_FORWARD = """
        ON CONFLICT (name) DO UPDATE
        SET last_id = greatest(c.last_id, excluded.last_id),
            last_timestamp = CASE WHEN excluded.last_id > c.last_id
                                  THEN coalesce(excluded.last_timestamp, c.last_timestamp)
                                  ELSE c.last_timestamp END,
            updated_at = now()
"""


async def advance(
    conn: asyncpg.Connection,
    last_id: int,
    last_timestamp: datetime | None,
    name: str = DEFAULT_NAME,
) -> int:
    """Move the cursor to `last_id` unless it is already further; return where it is.
    `last_timestamp` None (only skipped rows since the last move) keeps the old one."""
    value = await conn.fetchval(
        f"""
        INSERT INTO intake_cursor AS c (name, last_id, last_timestamp, updated_at)
        VALUES ($1, $2, $3, now())
        {MOVE_FORWARD}
        RETURNING last_id
        """,
        name,
        last_id,
        last_timestamp,
    )
    return int(value)
