"""Per model and coin: the last result and until when the coin is ignored.

Ignore windows (CONTRACTS.md section 3) are per coin: after a negative,
positive or alert result the model skips that coin for the configured seconds.
Kept in a table so that a restart does not forget them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True, slots=True)
class ScanResult:
    coin_id: str
    tag: str
    data_timestamp: datetime
    ignore_until: datetime | None


async def ignored_until(
    conn: asyncpg.Connection, active_model_id: int, coins: Sequence[str]
) -> dict[str, datetime]:
    """Coins of `coins` with an ignore window, and when it ends (in data time)."""
    rows = await conn.fetch(
        """
        SELECT coin_id, ignore_until FROM coin_scan_state
        WHERE active_model_id = $1 AND coin_id = ANY($2::text[]) AND ignore_until IS NOT NULL
        """,
        active_model_id,
        list(coins),
    )
    return {r["coin_id"]: r["ignore_until"] for r in rows}


async def record(
    conn: asyncpg.Connection, active_model_id: int, results: Sequence[ScanResult]
) -> None:
    """Upsert the latest result per coin; an older tick never overwrites a newer one."""
    if not results:
        return
    await conn.execute(
        """
        INSERT INTO coin_scan_state AS s
            (active_model_id, coin_id, last_tag, last_data_timestamp, ignore_until, updated_at)
        SELECT $1, coin, tag, ts, until, now()
        FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[])
            AS r(coin, tag, ts, until)
        ON CONFLICT (active_model_id, coin_id) DO UPDATE
        SET last_tag = excluded.last_tag,
            last_data_timestamp = excluded.last_data_timestamp,
            ignore_until = excluded.ignore_until,
            updated_at = now()
        WHERE s.last_data_timestamp <= excluded.last_data_timestamp
        """,
        active_model_id,
        [r.coin_id for r in results],
        [r.tag for r in results],
        [r.data_timestamp for r in results],
        [r.ignore_until for r in results],
    )
