"""The batcher's rolled-forward prefix state equals the state over the full history."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from actors.scoring.prefix_cache import _NO_PHASE, PrefixCache, RowsBefore, _windows, phase_filter
from features.running import PREFIX_SCHEMA, prefix_state

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _history(coins: int, rows: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for c in range(coins):
        n = rows - c * 7
        steps = rng.integers(1, 30, n).cumsum()
        high = rng.lognormal(0, 0.3, n).cumsum()
        high[rng.random(n) < 0.05] = np.nan  # NULL highs happen
        frames.append(
            pl.DataFrame(
                {
                    "mint": f"coin{c}",
                    "timestamp": [T0 + timedelta(seconds=int(s)) for s in steps],
                    "phase_id_at_time": np.minimum(1 + np.arange(n) // 40, 3),
                    "price_high": high,
                    "price_close": high * 0.9,
                    "dev_sold_amount": np.where(rng.random(n) < 0.1, rng.random(n), np.nan),
                }
            )
        )
    return (
        pl.concat(frames)
        .with_columns(pl.col("price_high").fill_nan(None))
        .with_columns(
            pl.col("dev_sold_amount").fill_nan(None), pl.col("phase_id_at_time").cast(pl.Int64)
        )
    )


def _expected(full: pl.DataFrame, window: pl.DataFrame, key: str) -> pl.DataFrame:
    bounds = window.group_by("mint").agg(pl.col("timestamp").min().alias("boundary"))
    before = full.join(bounds, on="mint").filter(pl.col("timestamp") < pl.col("boundary"))
    expr = phase_filter(key)
    if expr is not None:
        before = before.filter(expr)
    return prefix_state(before.drop("boundary"))


def _rows_before(full: pl.DataFrame, asked: list[list[str]]) -> RowsBefore:
    """The rows-before read over an in-memory history, noting which coins were asked for."""

    async def rows_before(mints: Sequence[str], boundaries: Sequence[datetime]) -> pl.DataFrame:
        asked.append(sorted(mints))
        b = pl.DataFrame({"mint": list(mints), "boundary": list(boundaries)}).cast(
            {"boundary": full.schema["timestamp"]}
        )
        return (
            full.join(b, on="mint")
            .filter(pl.col("timestamp") < pl.col("boundary"))
            .drop("boundary")
        )

    return rows_before


@pytest.mark.parametrize(
    ("max_coins", "reads"),
    [
        # The database is asked at first sight and whenever the ticks jumped past the
        # held window (to 70, 100 and 150); small steps roll forward from rows held.
        (50_000, [5, 5, 5, 5]),
        # Holding 3 of the 5 coins, the 2 evicted at each batch are read again.
        (3, [5, 2, 2, 2, 2, 5, 2, 2, 5, 5]),
    ],
)
async def test_prefix_rolls_forward_like_a_full_recompute(max_coins: int, reads: list[int]) -> None:
    full = _history(coins=5, rows=160, seed=3)
    asked: list[list[str]] = []
    rows_before = _rows_before(full, asked)

    cache = PrefixCache(rows_before, max_coins=max_coins)
    ranked = full.with_columns(pl.int_range(pl.len()).over("mint").alias("_i"))
    window_rows = 20
    # Ticks advance 1-3 rows per coin per batch (and one jump past the held window).
    for tick_index in [30, 31, 33, 36, 37, 70, 71, 72, 100, 150]:
        window = ranked.filter(
            (pl.col("_i") <= tick_index) & (pl.col("_i") > tick_index - window_rows)
        ).drop("_i")
        got = await cache.prefix_for(window, ["all", "1,2"])
        for key in ("all", "1,2"):
            mine = got.filter(pl.col("phase_key") == key).drop("phase_key").sort("mint")
            want = _expected(full, window, key).sort("mint")
            # Coins without rows of the phase before the window have a neutral state.
            want = (
                window.select("mint")
                .unique()
                .join(want, on="mint", how="left")
                .sort("mint")
                .with_columns(
                    pl.col("prefix_rows").fill_null(0), pl.col("prefix_dev_sum").fill_null(0.0)
                )
                .cast(PREFIX_SCHEMA)  # type: ignore[arg-type]
            )
            assert_frame_equal(mine, want, check_exact=False, rel_tol=1e-12)
    assert [len(a) for a in asked] == reads


async def test_a_coin_with_less_than_a_full_window_needs_no_database_read() -> None:
    """Fewer rows than asked for means every row up to the tick was loaded: no prefix."""
    full = _history(coins=3, rows=60, seed=5)
    asked: list[list[str]] = []
    rows_before = _rows_before(full, asked)

    # coin0 has 60 rows, coin1 53, coin2 46: a 50-row window is full for coin0 and coin1.
    window = full.with_columns(pl.int_range(pl.len()).over("mint").alias("_i")).filter(
        pl.col("_i") >= pl.len().over("mint").cast(pl.Int64) - 50
    )
    window = window.drop("_i")
    got = await PrefixCache(rows_before).prefix_for(window, ["all"], window_rows=50)
    assert asked == [["coin0", "coin1"]]
    everyone = await PrefixCache(rows_before).prefix_for(window, ["all"])
    assert_frame_equal(got.sort("mint"), everyone.sort("mint"))
    coin2 = got.filter(pl.col("mint") == "coin2")
    assert coin2["prefix_rows"].to_list() == [0]


@pytest.mark.parametrize("order", ["sorted", "shuffled"])
def test_windows_are_each_coins_rows_in_time_order(order: str) -> None:
    """The arrays the prefix rolls forward from (read column by column, the sort skipped
    when the history is sorted) are what a cast, sort and split of the frame give:
    NULL phases (in no phase list), NULL and NaN highs, repeated times."""
    history = _history(4, 60, seed=3).with_columns(
        pl.when(pl.int_range(pl.len()) % 7 == 0)
        .then(None)
        .otherwise(pl.col("phase_id_at_time"))
        .alias("phase_id_at_time"),
        pl.when(pl.int_range(pl.len()) % 11 == 0)
        .then(float("nan"))
        .otherwise(pl.col("price_high"))
        .alias("price_high"),
    )
    history = pl.concat([history, history.tail(3)])  # repeated times
    history = (
        history.sort(["mint", "timestamp"], maintain_order=True)
        if order == "sorted"
        else history.sample(fraction=1.0, shuffle=True, seed=5)
    )
    mints, windows = _windows(history)
    expected = history.sort(["mint", "timestamp"], maintain_order=True)
    assert mints == expected["mint"].unique(maintain_order=True).to_list()
    for mint, window in zip(mints, windows, strict=True):
        rows = expected.filter(pl.col("mint") == mint)
        assert window.times_us.tolist() == rows["timestamp"].dt.epoch("us").to_list()
        assert window.phases.tolist() == rows["phase_id_at_time"].fill_null(_NO_PHASE).to_list()
        for got, name in ((window.highs, "price_high"), (window.devs, "dev_sold_amount")):
            assert np.array_equal(got, rows[name].to_numpy(), equal_nan=True)
