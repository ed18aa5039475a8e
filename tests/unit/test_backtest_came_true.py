"""A backtest tick that is not judged (pending, not applicable) has no came_true."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from actors.backtest.outcomes import OutcomeTarget, outcomes

START = datetime(2026, 11, 1, tzinfo=UTC)


def test_pending_and_not_applicable_ticks_are_neither_hits_nor_misses() -> None:
    """came_true is what precision and recall count: a pending tick (its window ends
    after the data) or one without a price at T must be NULL there, not true."""
    stamps = [START + timedelta(minutes=i) for i in range(6)]
    closes = [1.0, None, 1.2, 1.3, 1.4, 1.5]
    rows = pl.DataFrame(
        {
            "mint": ["m"] * 6,
            "timestamp": stamps,
            "price_close": closes,
            "price_high": closes,
            "price_low": closes,
        },
        schema_overrides={"timestamp": pl.Datetime("us", "UTC")},
    )
    ticks = rows.select("mint", "timestamp", pl.lit(1, pl.Int64).alias("prediction"))
    target = OutcomeTarget("time_based", 2, 5.0, "up", None, None, None)
    judged = outcomes(rows, ticks, target, evaluable_until=stamps[-1])
    assert judged["outcome"].to_list() == [
        "success",  # 1.0 -> 1.2 by T+2
        "not_applicable",  # no price at T
        "success",  # 1.2 -> 1.4
        "success",  # 1.3 -> 1.5
        "pending",  # T+2 after the last row
        "pending",
    ]
    assert judged["came_true"].to_list() == [True, None, True, True, None, None]
