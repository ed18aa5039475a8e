"""Running a backtest over the database or over a recording (see `actors.backtest.engine`).

Both sources hand whole coins, a group at a time, to `score_chunk` in a worker
thread; the event loop only reads rows and reports progress.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import partial

import anyio
import asyncpg
import polars as pl

from actors.backtest.engine import (
    CHUNK_ROWS,
    BacktestModel,
    ModelRun,
    Progress,
    coin_chunks,
    score_chunk,
)
from storage.backtests import rows as backtest_rows


def _longest_window(models: Sequence[BacktestModel]) -> timedelta:
    return timedelta(microseconds=max((m.target.window_us for m in models), default=0))


def _in_range(frame: pl.DataFrame, start: datetime | None, end: datetime | None) -> int:
    mask = pl.lit(True)
    if start is not None:
        mask = mask & (pl.col("timestamp") >= start)
    if end is not None:
        mask = mask & (pl.col("timestamp") <= end)
    return frame.filter(mask).height


def range_ticks(frame: pl.DataFrame, start: datetime | None, end: datetime | None) -> int:
    """Rows of a recording inside the range (the progress total)."""
    return _in_range(frame, start, end)


async def run_on_frame(
    rows: pl.DataFrame,
    models: Sequence[BacktestModel],
    *,
    start: datetime | None,
    end: datetime | None,
    progress: Progress | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> list[ModelRun]:
    """A recording (collector columns, row order = id order). An outcome is judged only
    when its window ends by the recording's last row: later rows were never recorded."""
    runs = [ModelRun(m) for m in models]
    if rows.is_empty():
        return runs
    last = rows["timestamp"].max()
    assert isinstance(last, datetime)
    if end is not None:
        rows = rows.filter(pl.col("timestamp") <= end + _longest_window(models))
    for chunk in coin_chunks(rows, chunk_rows):
        await anyio.to_thread.run_sync(
            partial(score_chunk, runs, chunk, start=start, end=end, evaluable_until=last)
        )
        if progress is not None:
            progress(_in_range(chunk, start, end))
    return runs


async def run_on_database(
    pool: asyncpg.Pool,
    models: Sequence[BacktestModel],
    *,
    start: datetime | None,
    end: datetime | None,
    grace_seconds: float,
    progress: Progress | None = None,
    on_total: Progress | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> list[ModelRun]:
    """The `coin_metrics` rows of the range. An outcome is judged once its window ended
    `grace_seconds` ago, as the evaluator would (later rows may still arrive)."""
    runs = [ModelRun(m) for m in models]
    evaluable_until = datetime.now(UTC) - timedelta(seconds=grace_seconds)
    until = None if end is None else end + _longest_window(models)
    async with pool.acquire() as conn:
        coins = await backtest_rows.coins_in_range(conn, start, end)
    if on_total is not None:
        on_total(sum(n for _, n in coins))
    group: list[str] = []
    ticks = 0
    for i, (mint, n) in enumerate(coins):
        group.append(mint)
        ticks += n
        if ticks < chunk_rows and i < len(coins) - 1:
            continue
        async with pool.acquire() as conn:
            chunk = await backtest_rows.coin_rows(conn, group, until)
        await anyio.to_thread.run_sync(
            partial(score_chunk, runs, chunk, start=start, end=end, evaluable_until=evaluable_until)
        )
        if progress is not None:
            progress(ticks)
        group, ticks = [], 0
    return runs
