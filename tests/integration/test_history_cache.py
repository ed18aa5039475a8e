"""The history cache gives every batch exactly what reading the whole window would."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import polars as pl
import pytest
from coin_rows import coin_rows, insert_rows

from actors.runtime.messages import Tick
from actors.scoring.history_cache import HistoryCache
from features.columns import BASE_COLUMNS
from storage.intake import coin_metrics

START = datetime(2026, 3, 1, tzinfo=UTC)
COLUMNS = tuple(BASE_COLUMNS)


def _tick(mint: str, at: datetime) -> Tick:
    return Tick(0, mint, at, 1, 0.0)


async def _direct(conn: asyncpg.Connection, ticks: Sequence[Tick], rows: int) -> pl.DataFrame:
    frame = await coin_metrics.load_history(
        conn, [t.coin_id for t in ticks], [t.data_timestamp for t in ticks], rows, COLUMNS
    )
    return frame.sort(["mint", "timestamp"])


async def _cached(
    conn: asyncpg.Connection,
    cache: HistoryCache,
    ticks: Sequence[Tick],
    rows: int,
    oldest: dict[str, datetime] | None = None,
) -> pl.DataFrame:
    plan = cache.plan(ticks, rows, oldest or {})
    fetched = await coin_metrics.load_history(
        conn, plan.mints, plan.as_of, rows, COLUMNS, plan.after
    )
    return cache.merge(plan, fetched).sort(["mint", "timestamp"])


def _at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


async def test_batches_read_only_new_rows_and_see_the_same_window(pool: asyncpg.Pool) -> None:
    cache = HistoryCache()
    async with pool.acquire() as conn:
        for i, mint in enumerate(("A", "B", "C")):
            await insert_rows(conn, coin_rows(mint, 30, start=START, seed=i))
        times = {"A": _at(5 * 29), "B": _at(5 * 29), "C": _at(5 * 29)}
        everyone = [_tick(m, times[m]) for m in ("A", "B", "C")]
        assert (await _cached(conn, cache, everyone, 12)).equals(await _direct(conn, everyone, 12))
        for step in range(1, 6):
            # New rows for A and B (C is silent), then a batch of their newest ticks.
            for i, mint in enumerate(("A", "B")):
                new = coin_rows(mint, step, start=times[mint] + timedelta(seconds=5), seed=10 + i)
                await insert_rows(conn, new)
                times[mint] = new[-1]["timestamp"]
            ticks = [_tick(m, times[m]) for m in ("A", "B")]
            cached = await _cached(conn, cache, ticks, 12)
            assert cached.equals(await _direct(conn, ticks, 12)), f"step {step}"
    assert cache.reads_full == 3  # the first batch only
    assert cache.reads_delta == 2 * 5


async def test_a_row_behind_the_window_makes_the_coin_read_its_whole_window(
    pool: asyncpg.Pool,
) -> None:
    cache = HistoryCache()
    async with pool.acquire() as conn:
        await insert_rows(conn, coin_rows("A", 20, start=START, step_seconds=10))
        first = [_tick("A", _at(190))]
        await _cached(conn, cache, first, 8)
        # A late row between held rows, and a newer one that supersedes it in the batch.
        late = coin_rows("A", 1, start=_at(185), seed=5)
        newer = coin_rows("A", 1, start=_at(200), seed=6)
        await insert_rows(conn, late)
        await insert_rows(conn, newer)
        ticks = [_tick("A", _at(200))]
        cached = await _cached(conn, cache, ticks, 8, oldest={"A": _at(185)})
        assert cached.equals(await _direct(conn, ticks, 8))
        assert _at(185) in cached["timestamp"].to_list()
        assert cache.reads_full == 2


async def test_a_larger_window_reads_everything_again(pool: asyncpg.Pool) -> None:
    cache = HistoryCache()
    async with pool.acquire() as conn:
        await insert_rows(conn, coin_rows("A", 40, start=START))
        ticks = [_tick("A", _at(5 * 39))]
        await _cached(conn, cache, ticks, 10)
        cached = await _cached(conn, cache, ticks, 31)
        assert cached.height == 31
        assert cached.equals(await _direct(conn, ticks, 31))


async def test_coins_replaced_evicted_and_compacted_keep_their_own_windows(
    pool: asyncpg.Pool,
) -> None:
    """Held windows are found by position: after coins were replaced, forgotten (at most
    three held) and the held rows compacted, every batch still sees the direct read."""
    cache = HistoryCache(max_coins=3, compact_after=1)
    mints = ["A", "B", "C", "D", "E"]
    times: dict[str, datetime] = {}
    async with pool.acquire() as conn:
        for i, mint in enumerate(mints):
            rows = coin_rows(mint, 15, start=_at(i), seed=i)
            await insert_rows(conn, rows)
            times[mint] = rows[-1]["timestamp"]
        for step, batch in enumerate([mints[:3], ["B", "D"], ["A", "E"], ["C", "B", "A"]]):
            for j, mint in enumerate(batch):
                new = coin_rows(mint, 2, start=times[mint] + timedelta(seconds=5), seed=50 + j)
                await insert_rows(conn, new)
                times[mint] = new[-1]["timestamp"]
            ticks = [_tick(m, times[m]) for m in batch]
            cached = await _cached(conn, cache, ticks, 6)
            assert cached.equals(await _direct(conn, ticks, 6)), f"batch {step}"
    # Held ones read only their new rows: B in batch 1, A in batch 3. The others were
    # never held or had been forgotten (C and B in batch 2, to keep three).
    assert (cache.reads_delta, cache.reads_full) == (2, 8)


async def test_a_small_read_gives_exactly_the_frame_a_copy_read_gives(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of up to SMALL_READ_COINS coins are read by a plain query, larger ones by
    COPY (issue 23): the features must not see which."""
    async with pool.acquire() as conn:
        for i, mint in enumerate(("A", "B", "C")):
            await insert_rows(conn, coin_rows(mint, 8, start=START, seed=i))
        # Values a reader can get wrong: NULLs, NaN, infinities, a numeric beyond double,
        # long decimals, booleans of both kinds.
        await conn.execute(
            """
            UPDATE coin_metrics SET
                price_close = CASE WHEN mint = 'A' THEN 'NaN'::numeric ELSE price_close END,
                volume_sol = CASE WHEN mint = 'B' THEN 'Infinity'::numeric ELSE NULL END,
                price_high = 1e400,
                price_open = CASE WHEN mint = 'C' THEN '-Infinity'::numeric ELSE -0.0 END,
                price_low = 0.000000031234567890123456789,
                is_koth = (id % 3 = 0),
                num_buys = CASE WHEN id % 2 = 0 THEN NULL ELSE num_buys END
            WHERE id % 4 = 1
            """
        )
        mints, as_of = ["A", "B", "C"], [_at(5 * 7)] * 3
        small = await coin_metrics.load_history(conn, mints, as_of, 6, COLUMNS)
        after = [None, _at(5 * 3), _at(5 * 6)]
        small_delta = await coin_metrics.load_history(conn, mints, as_of, 6, COLUMNS, after)
        monkeypatch.setattr(coin_metrics, "SMALL_READ_COINS", 0)
        copied = await coin_metrics.load_history(conn, mints, as_of, 6, COLUMNS)
        copied_delta = await coin_metrics.load_history(conn, mints, as_of, 6, COLUMNS, after)
    assert small.height == 18 and small_delta.height == 6 + 4 + 1
    assert small.schema == copied.schema
    assert small.equals(copied) and small_delta.equals(copied_delta)
    assert small["price_high"].null_count() > 0  # beyond double: missing, as before
    assert small["price_open"].null_count() > 0  # -Infinity: missing
