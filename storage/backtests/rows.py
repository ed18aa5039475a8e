"""Reads of `coin_metrics` for a backtest: the coins of a range, then their rows.

A backtest needs, per coin with a row in the range, every row from the coin's
first (features are as of each tick over the coin's whole history, so no prefix
state is needed) up to the end of the last tick's outcome window. Coins are
listed first and their rows loaded a group at a time, so memory is bounded by a
group, not by the range. The range query scans: coin_metrics has no index on
time alone, and a backtest is a batch job.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg
import polars as pl

from storage.intake.coin_metrics import HISTORY_COLUMNS, _copy_frame, _csv_select
from storage.predictions.evaluations import in_double

_NO_START = datetime.fromisoformat("0001-01-01T00:00:00+00:00")


async def coins_in_range(
    conn: asyncpg.Connection, start: datetime | None, end: datetime | None
) -> list[tuple[str, int]]:
    """(mint, rows in the range) of every coin with a row in [start, end], by mint."""
    rows = await conn.fetch(
        """
        SELECT mint, count(*) AS n FROM coin_metrics
        WHERE "timestamp" >= coalesce($1::timestamptz, '-infinity')
          AND "timestamp" <= coalesce($2::timestamptz, 'infinity')
        GROUP BY mint ORDER BY mint
        """,
        start,
        end,
    )
    return [(r["mint"], int(r["n"])) for r in rows]


async def coin_rows(
    conn: asyncpg.Connection, mints: Sequence[str], until: datetime | None
) -> pl.DataFrame:
    """Every row of these coins at or before `until` (all when None), in id order per coin."""
    query = f"""
        SELECT {_csv_select(HISTORY_COLUMNS, "c")}
        FROM coin_metrics c
        WHERE c.mint = ANY($1::text[])
          AND c."timestamp" <= coalesce($2::timestamptz, 'infinity')
        ORDER BY c.mint, c."timestamp", c.id
    """
    frame = await _copy_frame(conn, query, (list(mints), until), HISTORY_COLUMNS)
    return await _mark_out_of_range(conn, frame, mints, until)


_OUT_OF_RANGE_SQL = f"""
    SELECT id,
           coalesce(NOT {in_double("price_close")}, false) AS close_oor,
           coalesce(NOT {in_double("price_high")}, false) AS high_oor,
           coalesce(NOT {in_double("price_low")}, false) AS low_oor
    FROM coin_metrics
    WHERE mint = ANY($1::text[]) AND "timestamp" <= coalesce($2::timestamptz, 'infinity')
      AND NOT (coalesce({in_double("price_close")}, true)
               AND coalesce({in_double("price_high")}, true)
               AND coalesce({in_double("price_low")}, true))
"""


async def _mark_out_of_range(
    conn: asyncpg.Connection, frame: pl.DataFrame, mints: Sequence[str], until: datetime | None
) -> pl.DataFrame:
    """Flag prices that are there but no double can hold (NaN, Infinity, 1e1000).

    The frame holds them as NULL (storage.intake.coin_metrics), but the evaluator tells them
    from a missing price: such a close is the close as of T+N and makes the outcome
    not_applicable, such a high/low skips its row. Usually no row has one.
    """
    rows = await conn.fetch(_OUT_OF_RANGE_SQL, list(mints), until)
    flags = pl.DataFrame(
        {
            "id": [r["id"] for r in rows],
            "_close_oor": [r["close_oor"] for r in rows],
            "_high_oor": [r["high_oor"] for r in rows],
            "_low_oor": [r["low_oor"] for r in rows],
        },
        schema={
            "id": pl.Int64,
            "_close_oor": pl.Boolean,
            "_high_oor": pl.Boolean,
            "_low_oor": pl.Boolean,
        },
    )
    return frame.join(flags, on="id", how="left", maintain_order="left").with_columns(
        pl.col("_close_oor", "_high_oor", "_low_oor").fill_null(False)
    )


async def coin_prices(
    conn: asyncpg.Connection, mint: str, start: datetime, end: datetime, limit: int
) -> list[tuple[datetime, float | None]]:
    """(timestamp, price_close) of one coin in [start, end], oldest first, at most `limit`."""
    rows = await conn.fetch(
        """
        SELECT "timestamp", price_close::float8 AS price_close FROM coin_metrics
        WHERE mint = $1 AND "timestamp" >= $2 AND "timestamp" <= $3
        ORDER BY "timestamp", id LIMIT $4
        """,
        mint,
        start,
        end,
        limit,
    )
    return [(r["timestamp"], r["price_close"]) for r in rows]
