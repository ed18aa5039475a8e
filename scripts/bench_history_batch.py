"""CPU of one batch's history and newest-row features, without the database (issue 23).

What the batcher does per batch before the models score, on the same shapes as
`bench.py pipeline --coins 1000 --rate 200 --models 10` (20 coins per batch, 40
seeded rows per coin, a 64-row history, ten models of windows 5/10/15 sharing one
feature key): parse the read's records (`coin_metrics._record_frame`, on tuples shaped
as asyncpg's records of the small read), merge them into the history cache, roll the
prefix state forward and compute the newest rows' features once for the ten models.

    .venv/bin/python scripts/bench_history_batch.py [--batches 400] [--coins 1000]

Prints CPU per batch (time.process_time) per stage and a digest of every feature
value computed, so that two versions of the code can be checked to give the same bits.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import anyio
import numpy as np
import polars as pl

from actors.runtime.messages import Tick
from actors.scoring.history_cache import HistoryCache, HistoryPlan
from actors.scoring.prefix_cache import PrefixCache
from actors.scoring.shared_features import SharedFeatures, tick_frame
from features.columns import BASE_COLUMNS
from features.engineering import engineered_names
from features.matrix import FeatureSpec
from storage.intake import coin_metrics

COLUMNS = tuple(BASE_COLUMNS)
START_US = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1_000_000)
WINDOWS = (5, 10, 15)
HISTORY_ROWS = 64

Record = tuple[object, ...]


class Rows:
    """An in-memory coin_metrics: per coin, its records (as the small read sends them)."""

    def __init__(self, coins: int, seeded: int, seed: int = 7) -> None:
        self.rng = np.random.default_rng(seed)
        self.mints = [f"bench{i:05d}pump" for i in range(coins)]
        self.price = {m: 3e-8 for m in self.mints}
        self.rows: dict[str, list[Record]] = {m: [] for m in self.mints}
        self.next_id = 1
        for step in range(seeded):
            for mint in self.mints:
                self.add(mint, START_US + step * 5_000_000)

    def add(self, mint: str, ts_us: int) -> Record:
        r = self.rng
        self.price[mint] *= float(np.exp(r.normal(0.001, 0.04)))
        price = self.price[mint]
        volume = float(r.gamma(2.0, 0.5))
        buy = volume * float(r.uniform(0.2, 0.8))
        values: dict[str, object] = {
            "id": self.next_id,
            "mint": mint,
            "timestamp": ts_us,
            "phase_id_at_time": 1,
            "price_open": price,
            "price_high": price * 1.01,
            "price_low": price * 0.99,
            "price_close": price,
            "market_cap_close": price * 1e9,
            "bonding_curve_pct": float(r.uniform(0, 100)),
            "virtual_sol_reserves": 30.0,
            "is_koth": int(r.random() < 0.1),
            "volume_sol": volume,
            "buy_volume_sol": buy,
            "sell_volume_sol": volume - buy,
            "net_volume_sol": 2 * buy - volume,
            "num_buys": int(r.integers(0, 50)),
            "num_sells": int(r.integers(0, 50)),
            "unique_wallets": int(r.integers(0, 80)),
            "num_micro_trades": None,
            "max_single_buy_sol": buy / 3,
            "max_single_sell_sol": (volume - buy) / 3,
            "whale_buy_volume_sol": buy * 0.2,
            "whale_sell_volume_sol": (volume - buy) * 0.1,
            "num_whale_buys": 1,
            "num_whale_sells": 0,
            "dev_sold_amount": float(r.random()) if r.random() < 0.02 else 0.0,
            "volatility_pct": float(r.uniform(0, 20)),
            "avg_trade_size_sol": volume / 10,
            "buy_pressure_ratio": buy / volume,
            "unique_signer_ratio": float(r.uniform(0.05, 1.0)),
        }
        self.next_id += 1
        record = tuple(values[c] for c in COLUMNS)
        self.rows[mint].append(record)
        return record

    def read(self, plan: HistoryPlan) -> list[Record]:
        """What load_history's query returns: per coin, newest first."""
        out: list[Record] = []
        ts = COLUMNS.index("timestamp")
        for mint, as_of, after in zip(plan.mints, plan.as_of, plan.after, strict=True):
            as_of_us = _us(as_of)
            after_us = _us(after) if after is not None else None
            picked = [
                row
                for row in reversed(self.rows[mint])
                if _int(row[ts]) <= as_of_us and (after_us is None or _int(row[ts]) > after_us)
            ]
            out += picked[: plan.rows]
        return out


def _int(value: object) -> int:
    assert isinstance(value, int)
    return value


def _us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _at(ts_us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ts_us)


def _specs(models: int) -> list[FeatureSpec]:
    engineered = engineered_names(WINDOWS)
    base = ["price_close", "volume_sol", "buy_pressure_ratio", "num_buys", "volatility_pct"]
    specs = []
    for i in range(models):
        rng = np.random.default_rng(100 + i)
        picked = sorted(rng.choice(len(engineered), 30, replace=False))
        specs.append(FeatureSpec.from_model([*base, *(engineered[j] for j in picked)]))
    return specs


async def _run(args: argparse.Namespace) -> None:
    db = Rows(args.coins, args.seeded)
    history = HistoryCache()
    prefix = PrefixCache(_no_rows_before)
    specs = _specs(args.models)
    digest = hashlib.sha256()
    stages = dict.fromkeys(("parse", "merge", "prefix", "features"), 0.0)
    clock = args.seeded
    batch_coins = args.batch

    async def batch(mints: Sequence[str], now_us: int, timed: bool) -> None:
        ticks = []
        for mint in mints:
            record = db.add(mint, now_us)
            ticks.append(Tick(_int(record[0]), mint, _at(now_us), 1, 0.0))
        t0 = time.process_time()
        plan = history.plan(ticks, HISTORY_ROWS, {})
        planned = time.process_time()
        records = db.read(plan)  # the database's part: not timed
        t1 = time.process_time()
        fetched = coin_metrics._record_frame(records, COLUMNS)
        t2 = time.process_time()
        merged = history.merge(plan, fetched)
        t3 = time.process_time()
        state = await prefix.prefix_for(merged, ["all"], HISTORY_ROWS)
        t4 = time.process_time()
        shared = SharedFeatures(merged, state, tick_frame(ticks))
        for spec in specs:
            rows = await shared.get(spec, "all")
        t5 = time.process_time()
        if timed:
            # The plan is the cache's part of the merge; the in-memory read is not timed.
            took = (t2 - t1, t3 - t2 + planned - t0, t4 - t3, t5 - t4)
            for name, seconds in zip(stages, took, strict=True):
                stages[name] += seconds
        digest.update(np.ascontiguousarray(rows.values).tobytes())
        digest.update(repr(sorted(rows.index.items())).encode())

    # Warm: every coin read in full once (the bench's first ticks), then delta reads.
    for start in range(0, args.coins, batch_coins):
        clock += 1
        await batch(db.mints[start : start + batch_coins], START_US + clock * 5_000_000, False)
    order = list(db.mints)
    for i in range(args.batches):
        clock += 1
        start = (i * batch_coins) % args.coins
        mints = order[start : start + batch_coins]
        await batch(mints, START_US + clock * 5_000_000, True)
    total = sum(stages.values())
    per = {k: round(v / args.batches * 1000, 3) for k, v in stages.items()}
    print(
        f"{args.batches} batches of {batch_coins} coins ({args.coins} held, {args.models} models):"
        f" {total / args.batches * 1000:.3f} ms CPU per batch {per}"
    )
    print(f"digest {digest.hexdigest()[:16]}")


async def _no_rows_before(mints: Sequence[str], boundaries: Sequence[datetime]) -> pl.DataFrame:
    raise AssertionError("every coin has fewer rows than the window: no prefix read")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--coins", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--seeded", type=int, default=40)
    parser.add_argument("--models", type=int, default=10)
    anyio.run(_run, parser.parse_args())


if __name__ == "__main__":
    main()
