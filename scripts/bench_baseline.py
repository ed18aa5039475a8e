"""The baseline: the straightforward design of the service being replaced.

Per tick, per model: query the coin's newest 1000 rows at or before the tick,
compute the features with pandas (`scripts/pandas_features.compute_pandas`, the
reference implementation), `predict_proba` on that single row, and one INSERT.
No batching, no shared history, no shared features across models. The
benchmark times it on the same ticks the service processed and compares
throughputs; nothing here is used by the service.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pandas as pd

from features.columns import BASE_COLUMNS
from scripts.pandas_features import compute_pandas
from storage.model_files.store import load_model

HISTORY_ROWS = 1000
WINDOWS = (5, 10, 15)

_COLUMNS = ", ".join(f'"{c}"' for c in BASE_COLUMNS if c != "id")
_HISTORY_SQL = (
    f"SELECT {_COLUMNS} FROM coin_metrics WHERE mint = $1 AND timestamp <= $2 "
    f"ORDER BY timestamp DESC LIMIT {HISTORY_ROWS}"
)
_CREATE_SQL = """
CREATE TABLE IF NOT EXISTS bench_baseline_predictions (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_key      integer NOT NULL,
    coin_id        varchar(64) NOT NULL,
    data_timestamp timestamptz NOT NULL,
    probability    double precision NOT NULL,
    predicted_at   timestamptz NOT NULL DEFAULT now()
)
"""
_INSERT_SQL = (
    "INSERT INTO bench_baseline_predictions (model_key, coin_id, data_timestamp, probability) "
    "VALUES ($1, $2, $3, $4)"
)


@dataclass(frozen=True, slots=True)
class BaselineModel:
    key: int
    path: Path
    features: tuple[str, ...]


@dataclass(slots=True)
class BaselineResult:
    ticks: int = 0  # (coin, tick) pairs predicted by every model
    predictions: int = 0
    seconds: float = 0.0
    # Where the time went, summed over every (tick, model).
    query_s: float = 0.0
    features_s: float = 0.0
    predict_s: float = 0.0
    insert_s: float = 0.0
    history_rows: list[int] = field(default_factory=list)

    @property
    def ticks_per_s(self) -> float:
        return self.ticks / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "ticks": self.ticks,
            "predictions": self.predictions,
            "seconds": round(self.seconds, 3),
            "ticks_per_s": round(self.ticks_per_s, 2),
            "query_s": round(self.query_s, 3),
            "features_s": round(self.features_s, 3),
            "predict_s": round(self.predict_s, 3),
            "insert_s": round(self.insert_s, 3),
            "mean_history_rows": (
                round(float(np.mean(self.history_rows)), 1) if self.history_rows else 0.0
            ),
        }


def _frame(rows: Sequence[asyncpg.Record]) -> pd.DataFrame:
    frame = pd.DataFrame([dict(r) for r in rows])
    for column in frame.columns:
        if column not in ("mint", "timestamp", "is_koth"):
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    return frame.iloc[::-1].reset_index(drop=True)


async def run_baseline(
    dsn: str,
    models: Sequence[BaselineModel],
    ticks: Sequence[tuple[str, datetime]],
    *,
    max_seconds: float,
) -> BaselineResult:
    """Process `ticks` in order the old way until they run out or `max_seconds` passed."""
    loaded = [(m, load_model(m.path)) for m in models]
    conn = await asyncpg.connect(dsn)
    result = BaselineResult()
    try:
        await conn.execute(_CREATE_SQL)
        started = time.perf_counter()
        for coin, tick in ticks:
            if time.perf_counter() - started >= max_seconds:
                break
            for model, estimator in loaded:
                t0 = time.perf_counter()
                rows = await conn.fetch(_HISTORY_SQL, coin, tick)
                t1 = time.perf_counter()
                features = compute_pandas(_frame(rows), WINDOWS)
                row = features.loc[[features.index[-1]], list(model.features)].astype("float64")
                t2 = time.perf_counter()
                probability = float(estimator.predict_proba(row.to_numpy())[0, 1])
                t3 = time.perf_counter()
                await conn.execute(_INSERT_SQL, model.key, coin, tick, probability)
                t4 = time.perf_counter()
                result.query_s += t1 - t0
                result.features_s += t2 - t1
                result.predict_s += t3 - t2
                result.insert_s += t4 - t3
                result.predictions += 1
                result.history_rows.append(len(rows))
            result.ticks += 1
        result.seconds = time.perf_counter() - started
    finally:
        await conn.close()
    return result
