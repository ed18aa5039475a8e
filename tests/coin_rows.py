"""Generated coin_metrics rows, inserted the way a collector does (one statement)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import numpy as np

from storage.intake.coin_metrics import COLLECTOR_COLUMNS, insert_columns

COLUMNS = COLLECTOR_COLUMNS


def coin_rows(
    mint: str,
    n: int,
    *,
    start: datetime | None = None,
    step_seconds: float = 5.0,
    seed: int = 0,
    phase: int = 1,
) -> list[dict[str, Any]]:
    """n consecutive rows of one coin: a random walk with plausible volumes."""
    rng = np.random.default_rng(seed)
    start = start or datetime.now(UTC) - timedelta(seconds=step_seconds * n)
    price = 3e-8 * float(np.exp(rng.normal(0, 0.3)))
    rows = []
    for i in range(n):
        o = price
        price = max(price * float(np.exp(rng.normal(0.002, 0.05))), 1e-10)
        hi, lo = max(o, price) * (1 + abs(rng.normal(0, 0.01))), min(o, price) * 0.99
        buys, sells = int(rng.integers(0, 30)), int(rng.integers(0, 20))
        bv, sv = float(rng.gamma(2, 0.5)), float(rng.gamma(2, 0.4))
        rows.append(
            {
                "mint": mint,
                "timestamp": start + timedelta(seconds=step_seconds * i),
                "phase_id_at_time": phase,
                "price_open": o,
                "price_high": hi,
                "price_low": lo,
                "price_close": price,
                "market_cap_close": price * 1e9,
                "bonding_curve_pct": min(99.0, 5 + i * 0.1),
                "virtual_sol_reserves": 30 + i * 0.05,
                "is_koth": bool(rng.random() < 0.05),
                "volume_sol": bv + sv,
                "buy_volume_sol": bv,
                "sell_volume_sol": sv,
                "net_volume_sol": bv - sv,
                "num_buys": buys,
                "num_sells": sells,
                "unique_wallets": buys + sells // 2,
                "num_micro_trades": int(rng.integers(0, 5)),
                "max_single_buy_sol": bv / max(buys, 1) * 2,
                "max_single_sell_sol": sv / max(sells, 1) * 2,
                "whale_buy_volume_sol": bv * 0.2,
                "whale_sell_volume_sol": sv * 0.1,
                "num_whale_buys": int(rng.integers(0, 3)),
                "num_whale_sells": int(rng.integers(0, 2)),
                "dev_sold_amount": float(rng.random()) if rng.random() < 0.03 else 0.0,
                "volatility_pct": float(abs(rng.normal(5, 2))),
                "avg_trade_size_sol": (bv + sv) / max(buys + sells, 1),
                "buy_pressure_ratio": bv / (bv + sv),
                "unique_signer_ratio": float(rng.uniform(0.3, 1.0)),
            }
        )
    return rows


async def insert_rows(conn: asyncpg.Connection, rows: Sequence[dict[str, Any]]) -> list[int]:
    """One INSERT statement for all rows (one NOTIFY); returns the new ids in order."""
    return await insert_columns(conn, [[r[c] for r in rows] for c in COLUMNS])
