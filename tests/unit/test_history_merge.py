"""The history cache's merge (NumPy keys, one gather) gives exactly the frame the
Polars way gives: held windows of the coins read by delta, then the fetched rows,
sorted by (mint, timestamp) keeping ties in order, each coin's last rows kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from actors.scoring.history_cache import HistoryCache, HistoryPlan
from features.columns import UTC_TIME

T0 = datetime(2026, 1, 1, tzinfo=UTC)
# Mints whose order differs between byte, code point and naive case orders.
MINTS = ["b", "B", "a", "ab", "é", "Z9", "zz", "\u4e00pump"]
SCHEMA = {
    "mint": pl.String(),
    "timestamp": UTC_TIME,
    "id": pl.Int64(),
    "price_close": pl.Float64(),
    "is_koth": pl.Boolean(),
}


class _Reference:
    """The merge as it was: concat, sort, group_by.tail (per coin: held window, newest)."""

    def __init__(self, max_coins: int) -> None:
        self.held: dict[str, pl.DataFrame] = {}
        self.max_coins = max_coins

    def merge(self, plan: HistoryPlan, fetched: pl.DataFrame) -> pl.DataFrame:
        reused = [
            self.held[m]
            for m, a in zip(plan.mints, plan.after, strict=True)
            if a is not None and m in self.held
        ]
        combined = pl.concat([*reused, fetched], how="vertical_relaxed")
        history = (
            combined.sort(["mint", "timestamp"], maintain_order=True)
            .group_by("mint", maintain_order=True)
            .tail(plan.rows)
            .select(fetched.columns)
        )
        for (mint,), window in history.group_by("mint", maintain_order=True):
            self.held.pop(str(mint), None)
            self.held[str(mint)] = window
        while len(self.held) > self.max_coins:
            del self.held[next(iter(self.held))]
        return history


def _rows(rng: np.random.Generator, mint: str, after: int, count: int) -> list[dict[str, object]]:
    """`count` rows of a coin after second `after`: repeated times, NaN, inf, NULLs."""
    if count == 0:
        return []
    seconds = after + rng.integers(1, 4, size=count).cumsum()
    seconds[rng.random(count) < 0.2] = seconds[0]  # repeated timestamps
    price = rng.choice([1.5, np.nan, np.inf, -np.inf, 0.0, -0.0, None], size=count)
    return [
        {
            "mint": mint,
            "timestamp": T0 + timedelta(seconds=int(s), microseconds=int(rng.integers(0, 3))),
            "id": int(rng.integers(0, 1000)) if rng.random() > 0.1 else None,
            "price_close": p,
            "is_koth": [True, False, None][int(rng.integers(0, 3))],
        }
        for s, p in zip(seconds.tolist(), price.tolist(), strict=True)
    ]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 6), max_coins=st.integers(1, 8))
def test_the_merge_equals_sorting_and_tailing_the_held_and_fetched_rows(
    seed: int, rows: int, max_coins: int
) -> None:
    rng = np.random.default_rng(seed)
    cache = HistoryCache(max_coins=max_coins, compact_after=int(rng.integers(1, 20)))
    reference = _Reference(max_coins)
    newest: dict[str, int] = {}  # seconds after T0 of each coin's newest fetched row
    for _ in range(12):
        mints = [str(m) for m in rng.choice(MINTS, size=int(rng.integers(1, 5)))]
        fetched_rows: list[dict[str, object]] = []
        after: list[datetime | None] = []
        for mint in mints:
            delta = mint in reference.held and rng.random() < 0.7  # else a full (late) read
            start = newest.get(mint, 0) if delta else int(rng.integers(0, 5))
            after.append(cache._newest.get(mint) if delta else None)
            fetched_rows += _rows(rng, mint, start, int(rng.integers(0, rows + 3)))
            newest[mint] = start + 10 * (rows + 3)
        order = rng.permutation(len(fetched_rows))
        fetched = pl.DataFrame([fetched_rows[i] for i in order], schema=SCHEMA)
        plan = HistoryPlan(mints, [T0] * len(mints), after, rows)
        expected = reference.merge(plan, fetched)
        got = cache.merge(plan, fetched)
        assert_frame_equal(got, expected, check_exact=True)
        assert cache._held.mints() == list(reference.held)
        for mint, window in reference.held.items():
            assert cache._newest[mint] == window["timestamp"].max()
