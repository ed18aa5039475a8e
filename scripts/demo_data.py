"""Demo data: a synthetic collector and a stand-in Training Service with two real models.

Everything here is DEMO DATA: made-up coins, not market data. It exists so a
newcomer on the embedded database sees the whole pipeline work (rows arrive,
models predict, webhooks go out, outcomes are evaluated) without a collector
or a Training Service of their own.

    python scripts/demo_data.py --coins 20         # collector + stand-in TS on this database

- `Market` simulates pump.fun coins on a constant-product bonding curve:
  irregular trades, phases by coin age from `ref_coin_phases`, occasional
  pumps, rugs (the dev sells), graduations, new coins replacing dead ones.
- `generate_history` runs the same market on a simulated clock (deterministic
  per seed) for training and tests; `SyntheticCollector` runs it on the wall
  clock and writes small multi-row INSERTs, as a real collector does.
- `train_demo_models` fits one XGBoost and one RandomForest the way the
  Training Service does (Polars frame, so the models carry `feature_names_in_`;
  features from our own engine so every name is one we can compute), and
  `create_training_service_app` serves them through the three endpoints of
  CONTRACTS.md section 1.
- `demo_environment` starts both and is what `serve --demo` uses.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

if __package__ in (None, ""):  # run as `python scripts/demo_data.py`: make `scripts.` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio
import asyncpg
import joblib
import numpy as np
import polars as pl
import structlog
from aiohttp import web
from anyio.abc import TaskStatus

from features.columns import BASE_COLUMNS
from features.engineering import engineered_names
from features.matrix import FeatureSpec
from scripts.replay import COLLECTOR_COLUMNS, insert_coin_metrics
from storage.config import Settings

__all__ = [
    "DEFAULT_PHASES",
    "DemoEnvironment",
    "DemoTrainingService",
    "Market",
    "Phase",
    "SyntheticCollector",
    "create_training_service_app",
    "demo_environment",
    "generate_history",
    "insert_history",
    "load_phases",
    "train_demo_models",
]

log = structlog.get_logger(__name__)

# --------------------------------------------------------------------------- market model

# pump.fun's curve: 30 virtual SOL against ~1.073e9 virtual tokens at launch; a coin
# graduates at ~115 virtual SOL. price = v^2 / K puts prices at 2.8e-8 .. 4.1e-7 SOL.
_VIRTUAL_SOL_START: Final = 30.0
_VIRTUAL_SOL_GRADUATION: Final = 115.0
_CURVE_K: Final = 30.0 * 1.073e9
_TOTAL_SUPPLY: Final = 1e9
_SOL_USD: Final = 150.0  # market_cap_close is in USD, as the collector writes it
_WHALE_SOL: Final = 2.0
_MICRO_SOL: Final = 0.02
_KOTH_MARKET_CAP_USD: Final = 30_000.0
_DEAD_ACTIVITY: Final = 0.015  # trades per second below which a coin has died
_FINISHED_PHASE: Final = 99
_GRADUATED_PHASE: Final = 100


@dataclass(frozen=True, slots=True)
class Phase:
    id: int
    name: str
    interval_seconds: int
    min_age_minutes: int
    max_age_minutes: int


# The rows of ref_coin_phases that the embedded database installs.
DEFAULT_PHASES: Final[tuple[Phase, ...]] = (
    Phase(1, "Baby Zone", 5, 0, 10),
    Phase(2, "Survival Zone", 30, 10, 120),
    Phase(3, "Mature Zone", 60, 120, 1440),
    Phase(99, "Finished", 0, 1440, 999999),
    Phase(100, "Graduated", 0, 0, 999999),
)


async def load_phases(executor: asyncpg.Pool | asyncpg.Connection) -> tuple[Phase, ...]:
    """The collector's phases from ref_coin_phases (the defaults when the table is empty)."""
    rows = await executor.fetch(
        "SELECT id, name, interval_seconds, min_age_minutes, max_age_minutes "
        "FROM ref_coin_phases ORDER BY min_age_minutes, id"
    )
    phases = tuple(Phase(**dict(r)) for r in rows)
    return phases or DEFAULT_PHASES


def _phase_for_age(phases: Sequence[Phase], age_minutes: float) -> Phase | None:
    """The trading phase (interval > 0) whose age range holds the coin; None once finished."""
    for phase in phases:
        if (
            phase.interval_seconds > 0
            and phase.min_age_minutes <= age_minutes < phase.max_age_minutes
        ):
            return phase
    return None


def _price(v: float) -> float:
    return v * v / _CURVE_K


@dataclass(slots=True)
class _Coin:
    mint: str
    born: datetime
    v: float  # virtual SOL reserves
    activity: float  # expected trades per second
    half_life: float  # seconds for activity to halve
    buy_bias: float
    bucket_start: datetime
    pump_until: datetime | None = None
    rugged: bool = False
    dev_tokens_sol: float = 0.0  # what the dev's initial buy is worth to sell


_B58: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


class Market:
    """Coins that trade, pump, rug, graduate and die; `advance(t)` returns the rows up to t.

    Each coin writes at most one row per interval of its phase (5 s in the
    Baby Zone, 30 s later), and only for intervals in which it traded, so rows
    are irregular. The row is written when its interval ends, stamped with the
    time of its last trade. Dead and graduated coins are replaced by new ones
    so that about `n_coins` are alive. Deterministic for a given seed and
    sequence of `advance` calls.
    """

    def __init__(
        self,
        n_coins: int,
        start: datetime,
        *,
        seed: int | None = None,
        phases: Sequence[Phase] = DEFAULT_PHASES,
        stagger_seconds: float = 0.3,
    ) -> None:
        if n_coins < 1:
            raise ValueError("n_coins must be at least 1")
        self.n_coins = n_coins
        self.phases = tuple(phases)
        self.rng = np.random.default_rng(seed)
        self.now = start
        self.alive = 0
        self.coins_created = 0
        self.pumps = 0
        self.rugs = 0
        self.graduations = 0
        self._events: list[tuple[datetime, int, str, _Coin | None]] = []
        self._seq = 0
        for i in range(n_coins):
            self._schedule(start + timedelta(seconds=i * stagger_seconds), "birth", None)

    # -- scheduling

    def _schedule(self, when: datetime, kind: str, coin: _Coin | None) -> None:
        self._seq += 1
        heapq.heappush(self._events, (when, self._seq, kind, coin))

    def _new_mint(self) -> str:
        chars = self.rng.choice(list(_B58), size=40)
        return "".join(chars) + "pump"

    def advance(self, until: datetime) -> list[dict[str, Any]]:
        """Rows (collector columns) of every interval that ended at or before `until`."""
        rows: list[dict[str, Any]] = []
        while self._events and self._events[0][0] <= until:
            when, _, kind, coin = heapq.heappop(self._events)
            self.now = when
            if kind == "birth":
                rows.append(self._birth(when))
            else:
                assert coin is not None
                row = self._interval(coin, when)
                if row is not None:
                    rows.append(row)
        self.now = max(self.now, until)
        return rows

    # -- coin life

    def _birth(self, when: datetime) -> dict[str, Any]:
        rng = self.rng
        self.alive += 1
        self.coins_created += 1
        dev_buy = float(rng.uniform(0.3, 2.5))
        coin = _Coin(
            mint=self._new_mint(),
            born=when,
            v=_VIRTUAL_SOL_START,
            activity=float(rng.lognormal(math.log(0.5), 0.6)),
            half_life=float(rng.lognormal(math.log(240.0), 0.8)),
            buy_bias=float(rng.uniform(0.5, 0.62)),
            bucket_start=when,
            dev_tokens_sol=dev_buy,
        )
        phase = _phase_for_age(self.phases, 0.0) or self.phases[0]
        # The creation row: the dev's first buy.
        row = self._row(coin, when, phase.id, [(True, dev_buy)], dev_sold=0.0)
        self._schedule(when + timedelta(seconds=phase.interval_seconds), "interval", coin)
        return row

    def _finish(self, coin: _Coin) -> None:
        del coin
        self.alive -= 1
        # A replacement appears a little later, as new coins do.
        delay = float(self.rng.exponential(4.0))
        self._schedule(self.now + timedelta(seconds=delay), "birth", None)

    def _interval(self, coin: _Coin, end: datetime) -> dict[str, Any] | None:
        """Close the interval [bucket_start, end): maybe trades, maybe a row; schedule the next."""
        rng = self.rng
        start = coin.bucket_start
        seconds = (end - start).total_seconds()
        age_minutes = (start - coin.born).total_seconds() / 60.0
        phase = _phase_for_age(self.phases, age_minutes)
        coin.bucket_start = end
        # Interest fades: most coins die within minutes, a few live on.
        coin.activity *= 0.5 ** (seconds / coin.half_life)
        if phase is None or coin.activity < _DEAD_ACTIVITY:
            self._finish(coin)
            return None

        pumping = coin.pump_until is not None and start < coin.pump_until
        if not pumping and not coin.rugged and rng.random() < 1 - math.exp(-seconds / 420.0):
            coin.pump_until = start + timedelta(seconds=float(rng.uniform(20, 90)))
            coin.activity = max(coin.activity, 0.4) * 1.5
            pumping = True
            self.pumps += 1
        rate = coin.activity * (4.0 if pumping else 1.0)
        buy_bias = 0.85 if pumping else (0.3 if coin.rugged else coin.buy_bias)
        coin.buy_bias = float(np.clip(coin.buy_bias + rng.normal(0, 0.02), 0.4, 0.65))

        trades: list[tuple[bool, float]] = []
        dev_sold = 0.0
        rug_now = (
            not coin.rugged
            and coin.v > _VIRTUAL_SOL_START + 3
            and rng.random() < 1 - math.exp(-seconds / 900.0)
        )
        n = int(rng.poisson(rate * seconds))
        for _ in range(n):
            size = float(np.clip(rng.lognormal(math.log(0.12), 1.1), 0.001, 25.0))
            trades.append((bool(rng.random() < buy_bias), size))
        if rug_now:
            # The dev dumps: one big sell of most of the SOL in the curve.
            dev_sold = (coin.v - _VIRTUAL_SOL_START) * float(rng.uniform(0.4, 0.9))
            trades.insert(int(rng.integers(0, len(trades) + 1)), (False, dev_sold))
            coin.rugged = True
            coin.activity *= 0.25
            self.rugs += 1
        next_phase = _phase_for_age(self.phases, (end - coin.born).total_seconds() / 60.0)
        interval = (next_phase or phase).interval_seconds
        if not trades:
            self._schedule(end + timedelta(seconds=interval), "interval", coin)
            return None
        # Stamped with the last trade in the interval, written when the interval ends.
        last_trade = start + timedelta(seconds=seconds * float(rng.uniform(0.3, 0.98)))
        row = self._row(coin, last_trade, phase.id, trades, dev_sold=dev_sold)
        if coin.v >= _VIRTUAL_SOL_GRADUATION:
            row["phase_id_at_time"] = _GRADUATED_PHASE
            self.graduations += 1
            self._finish(coin)
            return row
        self._schedule(end + timedelta(seconds=interval), "interval", coin)
        return row

    def _row(
        self,
        coin: _Coin,
        when: datetime,
        phase_id: int,
        trades: Sequence[tuple[bool, float]],
        *,
        dev_sold: float,
    ) -> dict[str, Any]:
        rng = self.rng
        price_open = _price(coin.v)
        high = low = price_open
        buy_vol = sell_vol = 0.0
        buys = sells = micro = whale_buys = whale_sells = 0
        whale_buy_vol = whale_sell_vol = max_buy = max_sell = 0.0
        for is_buy, wanted in trades:
            if is_buy:
                size = wanted
                coin.v += size
                buys += 1
                buy_vol += size
                max_buy = max(max_buy, size)
                if size >= _WHALE_SOL:
                    whale_buys += 1
                    whale_buy_vol += size
            else:
                # Nobody can take out more SOL than the curve holds.
                size = min(wanted, max(coin.v - _VIRTUAL_SOL_START, 0.0) * 0.95)
                if size <= 0:
                    size = min(wanted, 0.001)
                coin.v = max(coin.v - size, _VIRTUAL_SOL_START)
                sells += 1
                sell_vol += size
                max_sell = max(max_sell, size)
                if size >= _WHALE_SOL:
                    whale_sells += 1
                    whale_sell_vol += size
            if size < _MICRO_SOL:
                micro += 1
            price = _price(coin.v)
            high, low = max(high, price), min(low, price)
        count = buys + sells
        volume = buy_vol + sell_vol
        close = _price(coin.v)
        market_cap = close * _TOTAL_SUPPLY * _SOL_USD
        wallets = max(1, int(rng.binomial(count, 0.75))) if count > 1 else count
        curve = (coin.v - _VIRTUAL_SOL_START) / (_VIRTUAL_SOL_GRADUATION - _VIRTUAL_SOL_START)
        return {
            "mint": coin.mint,
            "timestamp": when,
            "phase_id_at_time": phase_id,
            "price_open": price_open,
            "price_high": high,
            "price_low": low,
            "price_close": close,
            "market_cap_close": market_cap,
            "bonding_curve_pct": float(np.clip(curve * 100.0, 0.0, 100.0)),
            "virtual_sol_reserves": coin.v,
            "is_koth": market_cap >= _KOTH_MARKET_CAP_USD,
            "volume_sol": volume,
            "buy_volume_sol": buy_vol,
            "sell_volume_sol": sell_vol,
            "net_volume_sol": buy_vol - sell_vol,
            "num_buys": buys,
            "num_sells": sells,
            "unique_wallets": wallets,
            "num_micro_trades": micro,
            "max_single_buy_sol": max_buy,
            "max_single_sell_sol": max_sell,
            "whale_buy_volume_sol": whale_buy_vol,
            "whale_sell_volume_sol": whale_sell_vol,
            "num_whale_buys": whale_buys,
            "num_whale_sells": whale_sells,
            "dev_sold_amount": dev_sold,
            "volatility_pct": (high - low) / price_open * 100.0 if price_open else 0.0,
            "avg_trade_size_sol": volume / count if count else 0.0,
            "buy_pressure_ratio": buy_vol / volume if volume else 0.0,
            "unique_signer_ratio": wallets / count if count else 0.0,
        }


def rows_to_frame(rows: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """Market rows as a frame in the catalogue's types and the collector's column order."""
    schema = {c: BASE_COLUMNS[c] for c in COLLECTOR_COLUMNS}
    return pl.DataFrame(list(rows), schema=schema)


HISTORY_START: Final = datetime(2026, 1, 1, tzinfo=UTC)


def generate_history(
    n_coins: int, minutes: float, seed: int, *, start: datetime = HISTORY_START
) -> pl.DataFrame:
    """`minutes` of a market with about `n_coins` alive, on a simulated clock; deterministic.

    Sorted by (timestamp, mint); per coin, timestamps strictly increase.
    """
    market = Market(n_coins, start, seed=seed)
    rows = market.advance(start + timedelta(minutes=minutes))
    return rows_to_frame(rows).sort(["timestamp", "mint"])


async def insert_history(
    executor: asyncpg.Pool | asyncpg.Connection,
    frame: pl.DataFrame,
    *,
    rows_per_statement: int = 500,
) -> int:
    """Insert a history frame into coin_metrics in timestamp order; return the row count."""
    ordered = frame.sort("timestamp", maintain_order=True)
    for offset in range(0, ordered.height, rows_per_statement):
        await insert_coin_metrics(executor, ordered.slice(offset, rows_per_statement))
    return ordered.height


# --------------------------------------------------------------------------- the collector


class SyntheticCollector:
    """Writes a live market into coin_metrics, a few rows per statement, on the wall clock.

    DEMO DATA. Every `flush_seconds` it closes the intervals that ended and
    inserts their rows; `rows_written` counts what reached the database.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        n_coins: int = 20,
        seed: int | None = None,
        flush_seconds: float = 0.5,
        rows_per_statement: int = 20,
    ) -> None:
        self.pool = pool
        self.n_coins = n_coins
        self.seed = seed
        self.flush_seconds = flush_seconds
        self.rows_per_statement = rows_per_statement
        self.rows_written = 0
        self.market: Market | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        bound = log.bind(actor="demo_collector", demo=True)
        phases = await load_phases(self.pool)
        self.market = market = Market(
            self.n_coins, datetime.now(UTC), seed=self.seed, phases=phases
        )
        bound.info("demo collector started: writing SYNTHETIC coin_metrics", coins=self.n_coins)
        task_status.started()
        last_report = anyio.current_time()
        while True:
            rows = market.advance(datetime.now(UTC))
            for offset in range(0, len(rows), self.rows_per_statement):
                chunk = rows_to_frame(rows[offset : offset + self.rows_per_statement])
                self.rows_written += await insert_coin_metrics(self.pool, chunk)
            if anyio.current_time() - last_report >= 60:
                last_report = anyio.current_time()
                bound.info(
                    "demo collector progress",
                    rows_written=self.rows_written,
                    coins_alive=market.alive,
                    coins_created=market.coins_created,
                    pumps=market.pumps,
                    rugs=market.rugs,
                    graduations=market.graduations,
                )
            await anyio.sleep(self.flush_seconds)


# --------------------------------------------------------------------------- training


@dataclass(frozen=True, slots=True)
class DemoTarget:
    """A time-based target: +`percent` % (direction up) within `future_minutes`."""

    future_minutes: int
    percent: float
    direction: str = "up"


DEMO_BASE_FEATURES: Final[tuple[str, ...]] = (
    "price_close",
    "market_cap_close",
    "bonding_curve_pct",
    "volume_sol",
    "net_volume_sol",
    "num_buys",
    "num_sells",
    "unique_wallets",
    "whale_buy_volume_sol",
    "dev_sold_amount",
    "volatility_pct",
    "buy_pressure_ratio",
    "unique_signer_ratio",
)
DEMO_WINDOWS: Final[tuple[int, ...]] = (5, 10, 15)
# Short horizons so that a newcomer sees outcomes evaluated within minutes.
DEMO_MODELS: Final[tuple[tuple[int, str, str, DemoTarget, list[int] | None], ...]] = (
    (1, "Demo XGBoost +5% in 1 min", "xgboost", DemoTarget(1, 5.0), None),
    (2, "Demo RandomForest +3% in 2 min", "random_forest", DemoTarget(2, 3.0), [1, 2]),
)
DEMO_HISTORY_COINS: Final = 40
DEMO_HISTORY_MINUTES: Final = 40
DEMO_SEED: Final = 20260101


def label_time_based(history: pl.DataFrame, target: DemoTarget) -> pl.DataFrame:
    """`history` with `future_change_pct` and `label` (CONTRACTS.md section 2).

    The future close is the latest row at or before T+N (a coin that did not
    trade kept its price). Rows whose T+N lies beyond the end of the history
    get a NULL label: nobody knows yet what happened.
    """
    end = history["timestamp"].max()
    horizon = timedelta(minutes=target.future_minutes)
    keyed = history.sort(["mint", "timestamp"]).with_columns(
        (pl.col("timestamp") + horizon).alias("_future_ts")
    )
    future = keyed.select(
        "mint", pl.col("timestamp").alias("_future_ts"), pl.col("price_close").alias("_future")
    )
    joined = keyed.sort("_future_ts").join_asof(
        future.sort("_future_ts"),
        on="_future_ts",
        by="mint",
        strategy="backward",
        check_sortedness=False,  # sorted globally by the key, hence within each coin
    )
    change = (pl.col("_future") - pl.col("price_close")) / pl.col("price_close") * 100.0
    hit = change >= target.percent if target.direction == "up" else change <= -target.percent
    known = pl.col("_future_ts") <= end
    return (
        joined.with_columns(change.alias("future_change_pct"))
        .with_columns(pl.when(known).then(hit.cast(pl.Int64)).otherwise(None).alias("label"))
        .drop("_future_ts", "_future")
        .sort(["mint", "timestamp"])
    )


def _metrics(y_true: np.ndarray, proba: np.ndarray, change: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        matthews_corrcoef,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    y_pred = (proba >= 0.5).astype(np.int64)
    tp = int(((y_pred == 1) & (y_true == 1)).sum())
    tn = int(((y_pred == 0) & (y_true == 0)).sum())
    fp = int(((y_pred == 1) & (y_true == 0)).sum())
    fn = int(((y_pred == 0) & (y_true == 1)).sum())
    both_classes = len(np.unique(y_true)) == 2
    positives = change[y_pred == 1]
    return {
        "training_accuracy": float(accuracy_score(y_true, y_pred)),
        "training_f1": float(f1_score(y_true, y_pred, zero_division=0)),
        "training_precision": float(precision_score(y_true, y_pred, zero_division=0)),
        "training_recall": float(recall_score(y_true, y_pred, zero_division=0)),
        "roc_auc": float(roc_auc_score(y_true, proba)) if both_classes else None,
        "mcc": float(matthews_corrcoef(y_true, y_pred)),
        "fpr": fp / (fp + tn) if fp + tn else 0.0,
        "fnr": fn / (fn + tp) if fn + tp else 0.0,
        "confusion_matrix": {"tp": tp, "tn": tn, "fp": fp, "fn": fn},
        # Average actual change after a positive prediction, before fees.
        "simulated_profit_pct": float(positives.mean()) if positives.size else 0.0,
    }


def _estimator(model_type: str, seed: int) -> Any:
    if model_type == "xgboost":
        from xgboost import XGBClassifier

        return XGBClassifier(
            n_estimators=60, max_depth=4, learning_rate=0.15, random_state=seed, n_jobs=1
        )
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(
        n_estimators=25, max_depth=8, min_samples_leaf=5, random_state=seed, n_jobs=2
    )


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def train_demo_models(
    history: pl.DataFrame,
    out_dir: str | Path,
    *,
    seed: int = DEMO_SEED,
    models: Sequence[tuple[int, str, str, DemoTarget, list[int] | None]] = DEMO_MODELS,
) -> list[dict[str, Any]]:
    """Train the demo models on `history`; write `model_<id>_<type>.pkl`; return model objects.

    The objects have every field of CONTRACTS.md section 1. Metrics are
    measured on the last quarter of the history (by time), which the model
    never saw; `cv_scores` are accuracies of a 3-fold time-series split of the
    training part. Blocking and CPU-bound: run it in a worker thread.
    """
    from sklearn.model_selection import TimeSeriesSplit

    target_dir = Path(out_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    features = [*DEMO_BASE_FEATURES, *engineered_names(DEMO_WINDOWS)]
    params_common = {
        "use_engineered_features": True,
        "feature_engineering_windows": list(DEMO_WINDOWS),
    }
    spec = FeatureSpec.from_model(features, params_common)
    computed = spec.compute(history)
    cutoff = history["timestamp"].quantile(0.75, interpolation="nearest")
    assert cutoff is not None
    now = _iso(datetime.now(UTC))
    results: list[dict[str, Any]] = []
    for model_id, name, model_type, target, phases in models:
        labelled = label_time_based(computed, target).filter(pl.col("label").is_not_null())
        if phases is not None:
            labelled = labelled.filter(pl.col("phase_id_at_time").is_in(phases))
        labelled = labelled.sort(["timestamp", "mint"])
        train = labelled.filter(pl.col("timestamp") < cutoff)
        test = labelled.filter(pl.col("timestamp") >= cutoff)
        y_train = train["label"].to_numpy()
        y_test = test["label"].to_numpy()
        for part, y in (("training", y_train), ("held-out", y_test)):
            if len(np.unique(y)) != 2:
                raise ValueError(
                    f"{name}: the {part} rows have only class(es) {sorted(set(y.tolist()))}; "
                    "generate a longer or larger history"
                )
        x_train = train.select(features)  # a frame, so the model records feature_names_in_
        x_test = test.select(features)

        cv_scores: list[float] = []
        for fit_idx, val_idx in TimeSeriesSplit(n_splits=3).split(x_train):
            y_fit, y_val = y_train[fit_idx], y_train[val_idx]
            if len(np.unique(y_fit)) < 2:
                continue
            fold = _estimator(model_type, seed).fit(x_train[fit_idx], y_fit)
            cv_scores.append(float((fold.predict(x_train[val_idx]) == y_val).mean()))

        estimator = _estimator(model_type, seed).fit(x_train, y_train)
        train_accuracy = float((estimator.predict(x_train) == y_train).mean())
        proba = estimator.predict_proba(x_test)[:, 1]
        metrics = _metrics(y_test, proba, test["future_change_pct"].to_numpy())

        path = target_dir / f"model_{model_id}_{model_type}.pkl"
        joblib.dump(estimator, path)
        importances = np.asarray(estimator.feature_importances_, dtype=np.float64)
        tb = {
            "enabled": True,
            "future_minutes": target.future_minutes,
            "min_percent_change": target.percent,
            "direction": target.direction,
        }
        hyper = {k: v for k, v in estimator.get_params().items() if _is_json_scalar(v)}
        results.append(
            {
                "id": model_id,
                "name": name,
                "model_type": model_type,
                "status": "READY",
                "created_at": now,
                "updated_at": now,
                "is_deleted": False,
                "target_variable": "price_close",
                "target_operator": None,
                "target_value": None,
                "train_start": _iso(train["timestamp"].min()),  # type: ignore[arg-type]
                "train_end": _iso(train["timestamp"].max()),  # type: ignore[arg-type]
                "features": list(features),
                "phases": phases,
                "params": {**hyper, **params_common, "_time_based": tb},
                "feature_importance": {
                    f: round(float(v), 6) for f, v in zip(features, importances, strict=True)
                },
                **metrics,
                "cv_scores": cv_scores,
                "cv_overfitting_gap": (
                    train_accuracy - float(np.mean(cv_scores)) if cv_scores else None
                ),
                "model_file_path": str(path),
                "description": (
                    "DEMO model trained on synthetic data by the stand-in Training Service "
                    f"({train.height} training rows, {test.height} held-out rows)"
                ),
                "future_minutes": target.future_minutes,
                "price_change_percent": target.percent,
                "target_direction": target.direction,
            }
        )
    return results


def _is_json_scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int | bool)


# --------------------------------------------------------------------------- the stand-in TS


def _public(model: Mapping[str, Any]) -> dict[str, Any]:
    return dict(model)


def _not_found(model_id: str) -> web.Response:
    # The real service is FastAPI: errors are {"detail": ...}.
    return web.json_response({"detail": f"Model {model_id} not found"}, status=404)


def create_training_service_app(models: Sequence[Mapping[str, Any]]) -> web.Application:
    """The Training Service's three read endpoints under /api, serving `models`."""
    by_id = {int(m["id"]): dict(m) for m in models}

    def find(request: web.Request) -> dict[str, Any] | None:
        raw = request.match_info["model_id"]
        if not raw.isdigit():
            return None
        model = by_id.get(int(raw))
        return None if model is None or model.get("is_deleted") else model

    async def list_models(request: web.Request) -> web.Response:
        status = request.query.get("status")
        deleted = request.query.get("is_deleted")
        selected = [
            m
            for m in by_id.values()
            if (status is None or m.get("status") == status)
            and (deleted is None or str(bool(m.get("is_deleted"))).lower() == deleted.lower())
        ]
        return web.json_response([_public(m) for m in selected], dumps=_dumps)

    async def get_model(request: web.Request) -> web.Response:
        model = find(request)
        if model is None:
            return _not_found(request.match_info["model_id"])
        return web.json_response(_public(model), dumps=_dumps)

    async def download(request: web.Request) -> web.StreamResponse:
        model = find(request)
        path = Path(model["model_file_path"]) if model and model.get("model_file_path") else None
        if model is None or path is None or not path.is_file():
            return _not_found(request.match_info["model_id"])
        return web.FileResponse(
            path,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Disposition": f'attachment; filename="{path.name}"',
            },
        )

    app = web.Application()
    app.router.add_get("/api/models", list_models)
    app.router.add_get("/api/models/{model_id}", get_model)
    app.router.add_get("/api/models/{model_id}/download", download)
    return app


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


class DemoTrainingService:
    """The stand-in Training Service on 127.0.0.1 (a free port unless one is given)."""

    def __init__(
        self, models: Sequence[Mapping[str, Any]], *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.models = list(models)
        self.host = host
        self.port = port
        self.bound_port: int | None = None

    @property
    def base_url(self) -> str:
        """What TRAINING_SERVICE_API_URL would be: `http://127.0.0.1:<port>/api`."""
        if self.bound_port is None:
            raise RuntimeError("the demo Training Service is not running")
        return f"http://{self.host}:{self.bound_port}/api"

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        runner = web.AppRunner(create_training_service_app(self.models), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
            server = site._server
            assert server is not None
            sockets = getattr(server, "sockets", None) or []
            self.bound_port = int(sockets[0].getsockname()[1])
            log.info(
                "demo Training Service listening (stand-in, DEMO models)",
                url=self.base_url,
                models=[m["id"] for m in self.models],
            )
            task_status.started()
            await anyio.sleep_forever()
        finally:
            self.bound_port = None
            with anyio.CancelScope(shield=True):
                await runner.cleanup()


# --------------------------------------------------------------------------- everything


@dataclass(slots=True)
class DemoEnvironment:
    training_service: DemoTrainingService
    collector: SyntheticCollector | None
    models: list[dict[str, Any]] = field(default_factory=list)

    @property
    def training_service_url(self) -> str:
        return self.training_service.base_url

    @property
    def model_ids(self) -> list[int]:
        return [int(m["id"]) for m in self.models]


@asynccontextmanager
async def demo_environment(
    pool: asyncpg.Pool,
    *,
    n_coins: int = 20,
    seed: int | None = None,
    model_dir: str | Path | None = None,
    collector: bool = True,
) -> AsyncIterator[DemoEnvironment]:
    """Train the demo models, serve them, and (unless `collector=False`) write live demo rows.

    Training takes a few seconds in a worker thread. The models are the same
    on every run (fixed seed), so re-importing after a restart finds the same
    files; the live market uses `seed` (random by default, so restarts do not
    repeat coins). Everything stops when the block exits.
    """
    with tempfile.TemporaryDirectory(prefix="pump-demo-models-") as scratch:
        target_dir = Path(model_dir) if model_dir is not None else Path(scratch)

        def train() -> list[dict[str, Any]]:
            history = generate_history(DEMO_HISTORY_COINS, DEMO_HISTORY_MINUTES, DEMO_SEED)
            return train_demo_models(history, target_dir)

        models = await anyio.to_thread.run_sync(train)
        service = DemoTrainingService(models)
        writer = SyntheticCollector(pool, n_coins=n_coins, seed=seed) if collector else None
        async with anyio.create_task_group() as tg:
            await tg.start(service.run)
            if writer is not None:
                await tg.start(writer.run)
            try:
                yield DemoEnvironment(service, writer, models)
            finally:
                tg.cancel_scope.cancel()


# --------------------------------------------------------------------------- command line


async def run_demo(pool: asyncpg.Pool, *, n_coins: int, seed: int | None) -> None:
    """Run the demo until cancelled, printing where the stand-in Training Service is."""
    async with demo_environment(pool, n_coins=n_coins, seed=seed) as env:
        print(
            f"DEMO: synthetic collector writing {n_coins} coins into coin_metrics\n"
            f"DEMO: stand-in Training Service at {env.training_service_url} "
            f"(models {', '.join(map(str, env.model_ids))})\n"
            f"      set TRAINING_SERVICE_API_URL={env.training_service_url} to import them",
            flush=True,
        )
        await anyio.sleep_forever()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--coins", type=int, default=20, help="live demo coins (default 20)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the live market")
    parser.add_argument(
        "--allow-external-database",
        action="store_true",
        help="write demo rows even though DB_DSN points at a real database",
    )


async def demo_command(
    settings: Settings, *, n_coins: int, seed: int | None, allow_external_database: bool
) -> int:
    """`pump-predictor demo`: run the demo on the configured database until interrupted."""
    from storage.db.database import migrate, open_database, open_pool

    if not settings.embedded and not allow_external_database:
        print(
            "demo: DB_DSN is set; refusing to write synthetic rows into a real database "
            "(pass --allow-external-database if it is a scratch database)",
            file=sys.stderr,
        )
        return 2
    database = await open_database(settings)
    try:
        await migrate(database.dsn, embedded=settings.embedded)
        pool = await open_pool(settings, database.dsn)
        try:
            await run_demo(pool, n_coins=n_coins, seed=seed)
        finally:
            with anyio.CancelScope(shield=True):
                await pool.close()
    finally:
        with anyio.CancelScope(shield=True):
            await database.close()
    return 0


if __name__ == "__main__":
    from storage.config import load_settings

    cli = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    cli.add_argument("--config", help="path of config.toml (default: the repository's)")
    add_arguments(cli)
    parsed = cli.parse_args()
    with suppress(KeyboardInterrupt):  # Ctrl-C is how a demo ends
        anyio.run(
            lambda: demo_command(
                load_settings(parsed.config),
                n_coins=parsed.coins,
                seed=parsed.seed,
                allow_external_database=parsed.allow_external_database,
            )
        )
