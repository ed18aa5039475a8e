"""Predictions on request (`POST /api/predict`): the stream's path, for one coin.

The same history query, prefix state, features, scoring and storage as the
predictor actors, so a manual prediction equals what the stream would have
stored for that tick; it is stored (source "manual") and sent like one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime

import anyio
import asyncpg
import polars as pl

from actors.ports import ManualPredictError, ManualResult
from actors.runtime.messages import Tick
from actors.runtime.supervisor import Supervisor
from actors.scoring.model_runtime import ModelRuntime, score
from actors.scoring.model_sync import ModelSync, predictor_name
from actors.scoring.predictor import Predictor
from actors.scoring.prefix_cache import PrefixCache
from actors.scoring.shared_features import rows_for, tick_frame
from actors.webhooks.payload import tag_for
from features.columns import BASE_COLUMNS
from storage.intake import coin_metrics


class ManualPredictor:
    """The `ManualPredictions` port (actors/ports.py) the API calls: the running
    models of `model_sync`, their predictors under `supervisor`."""

    def __init__(
        self, pool: asyncpg.Pool, model_sync: ModelSync, supervisor: Supervisor, history_size: int
    ) -> None:
        self._pool, self._model_sync, self._supervisor = pool, model_sync, supervisor
        self._history_size = history_size

    async def predict(
        self, coin_id: str, model_ids: Sequence[int] | None, timestamp: datetime | None
    ) -> list[ManualResult]:
        return await predict_now(
            self._pool,
            self._model_sync,
            self._supervisor,
            coin_id,
            model_ids,
            timestamp,
            self._history_size,
        )


async def predict_now(
    pool: asyncpg.Pool,
    model_sync: ModelSync,
    supervisor: Supervisor,
    coin_id: str,
    model_ids: Sequence[int] | None,
    timestamp: datetime | None,
    history_size: int,
) -> list[ManualResult]:
    runtimes = _selected(model_sync, model_ids)
    async with pool.acquire() as conn:
        moment = timestamp or await coin_metrics.latest_timestamp(conn, coin_id)
        row = None if moment is None else await coin_metrics.row_at_or_before(conn, coin_id, moment)
        if row is None:
            where = "" if timestamp is None else f" at or before {timestamp.isoformat()}"
            raise ManualPredictError(
                "not_found", "coin_id", f"no coin_metrics row for {coin_id}{where}"
            )
        rows = max([history_size] + [r.spec.history_rows for r in runtimes])
        history = await coin_metrics.load_history(
            conn, [coin_id], [row.timestamp], rows, tuple(BASE_COLUMNS)
        )

    async def rows_before(mints: Sequence[str], bounds: Sequence[datetime]) -> pl.DataFrame:
        async with pool.acquire() as c:
            return await coin_metrics.load_rows_before(c, mints, bounds)

    # A throw-away cache: one coin, loaded once, exactly as the batcher builds it.
    prefix = await PrefixCache(rows_before).prefix_for(history, {r.phase_key for r in runtimes})
    tick = Tick(row.id, row.mint, row.timestamp, row.phase_id, time.time())
    results = []
    for runtime in runtimes:
        results.append(await _one(runtime, supervisor, tick, history, prefix))
    return results


def _selected(model_sync: ModelSync, model_ids: Sequence[int] | None) -> list[ModelRuntime]:
    running = model_sync.runtimes
    if model_ids is None:
        if not running:
            raise ManualPredictError("conflict", "model_ids", "no active model is running")
        return [running[k] for k in sorted(running)]
    missing = [m for m in model_ids if m not in running]
    if missing:
        raise ManualPredictError(
            "not_found", "model_ids", f"not an active, loaded model: {', '.join(map(str, missing))}"
        )
    return [running[m] for m in dict.fromkeys(model_ids)]


def _skipped(runtime: ModelRuntime, tick: Tick, reason: str) -> ManualResult:
    return ManualResult(
        runtime.active_model_id,
        runtime.name,
        tick.coin_id,
        tick.data_timestamp,
        None,
        None,
        None,
        None,
        stored=False,
        skipped=reason,
    )


async def _one(
    runtime: ModelRuntime,
    supervisor: Supervisor,
    tick: Tick,
    history: pl.DataFrame,
    prefix: pl.DataFrame,
) -> ManualResult:
    if runtime.phases and tick.phase_id not in runtime.phases:
        phases = list(runtime.phases)
        return _skipped(runtime, tick, f"phase {tick.phase_id} is not one of the model's {phases}")
    rows = await anyio.to_thread.run_sync(
        rows_for, runtime.spec, history, prefix, runtime.phase_key, tick_frame([tick])
    )
    scored = await anyio.to_thread.run_sync(score, runtime, [tick], rows)
    if not scored.ticks:
        return _skipped(runtime, tick, scored.skipped[0][1] if scored.skipped else "no features")
    name = predictor_name(runtime.active_model_id)
    if name not in supervisor.actor_names:
        raise ManualPredictError(
            "conflict", "model_ids", f"model {runtime.active_model_id} is restarting"
        )
    predictor: Predictor = supervisor.actor(name)
    stored = await predictor.store_manual(runtime, scored)
    p = float(scored.probabilities[0])
    return ManualResult(
        runtime.active_model_id,
        runtime.name,
        tick.coin_id,
        tick.data_timestamp,
        p,
        int(p >= 0.5),
        tag_for(p, float(runtime.row["alert_threshold"])),
        stored[0].id if stored else None,
        stored=bool(stored),
        skipped=None,
    )
