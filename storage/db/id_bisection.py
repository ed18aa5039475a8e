"""The newest id of rows older than a moment, found by bisection over the primary key.

Tables that grow by an identity id in time order (coin_metrics, webhook_outbox)
answer "where does `moment` fall?" with ~40 primary-key lookups instead of a scan
of a table without a time index. Ids that commit out of order, or a row whose
time was reset, make the answer approximate by a few rows: callers tolerate that.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg


async def last_id_older_than(
    conn: asyncpg.Connection, *, table: str, time_column: str, moment: datetime
) -> int:
    """The highest id whose row's `time_column` is older than `moment` (0: none).

    `table` and `time_column` are identifiers from our own code, never user input.
    """
    bounds = await conn.fetchrow(f"SELECT min(id) AS lo, max(id) AS hi FROM {table}")
    if bounds is None or bounds["lo"] is None:
        return 0
    lo, hi = int(bounds["lo"]) - 1, int(bounds["hi"])
    # Compared in SQL: a time Python cannot hold (BC, ±infinity) must not stop the search.
    probe = f"SELECT {time_column} < $2 FROM {table} WHERE id >= $1 ORDER BY id LIMIT 1"
    # Invariant: rows with id <= lo are older than moment; the row at hi might not be.
    if await conn.fetchval(probe, hi, moment):
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if await conn.fetchval(probe, mid, moment):
            lo = mid
        else:
            hi = mid
    return lo
