"""`bench.py features`: the Polars engine against the pandas way, on the same rows.

The pandas way is the Training Service's: per coin, one group at a time
(`scripts/pandas_features.compute_pandas`). Both compute every engineered column
for windows 5/10/15 over C coins x R rows; the ratio is measured in one run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from features.engineering import compute, engineered_names

WINDOWS = (5, 10, 15)


def synthetic_history(coins: int, rows: int, seed: int = 7) -> pl.DataFrame:
    """C coins x R rows with every base column the engine reads (a random walk)."""
    rng = np.random.default_rng(seed)
    n = coins * rows
    start = datetime(2026, 1, 1, tzinfo=UTC)
    steps = rng.integers(2, 30, size=(coins, rows)).cumsum(axis=1).ravel()
    price = 3e-8 * np.exp(rng.normal(0.001, 0.04, size=(coins, rows)).cumsum(axis=1)).ravel()
    volume = rng.gamma(2.0, 0.5, n)
    buy = volume * rng.uniform(0.2, 0.8, n)
    return pl.DataFrame(
        {
            "mint": np.repeat([f"coin{i:05d}" for i in range(coins)], rows),
            "timestamp": [start + timedelta(seconds=int(s)) for s in steps],
            "phase_id_at_time": np.ones(n, dtype=np.int64),
            "price_open": price,
            "price_high": price * (1 + rng.uniform(0, 0.02, n)),
            "price_low": price * (1 - rng.uniform(0, 0.02, n)),
            "price_close": price,
            "market_cap_close": price * 1e9,
            "volume_sol": volume,
            "buy_volume_sol": buy,
            "sell_volume_sol": volume - buy,
            "net_volume_sol": 2 * buy - volume,
            "whale_buy_volume_sol": buy * 0.2,
            "whale_sell_volume_sol": (volume - buy) * 0.1,
            "dev_sold_amount": np.where(rng.random(n) < 0.02, rng.random(n), 0.0),
            "volatility_pct": rng.uniform(0, 20, n),
            "buy_pressure_ratio": buy / volume,
            "unique_signer_ratio": rng.uniform(0.05, 1.0, n),
        }
    )


def _timed(fn: Callable[[], Any], repeat: int) -> float:
    """Best of `repeat` runs, in seconds (the least disturbed by the rest of the box)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def run(coins: int, rows: int, *, repeat: int = 3) -> dict[str, Any]:
    from scripts.pandas_features import compute_pandas

    frame = synthetic_history(coins, rows)
    polars_s = _timed(lambda: compute(frame, WINDOWS), repeat)
    pandas_frame = frame.to_pandas()
    pandas_s = _timed(lambda: compute_pandas(pandas_frame, WINDOWS), 1)
    total = frame.height
    return {
        "coins": coins,
        "rows_per_coin": rows,
        "rows": total,
        "features": len(engineered_names(WINDOWS)),
        "polars_s": round(polars_s, 4),
        "pandas_s": round(pandas_s, 4),
        "polars_rows_per_s": round(total / polars_s),
        "pandas_rows_per_s": round(total / pandas_s),
        "ratio": round(pandas_s / polars_s, 1),
    }
