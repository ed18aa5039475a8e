"""Rows for outcome tests, stored as the predictor stores them (it is not under test here)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
from app_server import served
from webhook_receiver import insert_active_model

from actors.webhooks.payload import tag_for
from storage.config import Settings
from storage.predictions import evaluations
from storage.predictions import writes as predictions
from storage.predictions.writes import BatchRows, ModelTarget, NewPrediction

ALERT_THRESHOLD = 0.7  # of a batch's models
# The target of every model these helpers predict with: up 10 % within 5 minutes.
TARGET: dict[str, Any] = {
    "target_kind": "time_based",
    "target_variable": "price_close",
    "target_operator": None,
    "target_value": None,
    "future_minutes": 5,
    "price_change_percent": 10.0,
    "target_direction": "up",
}


def new_prediction(active_model_id: int, coin: str, at: datetime, **changes: Any) -> NewPrediction:
    """A stream prediction of a coin tick (an alert, target +10 % in 5 min); `changes`
    replace fields."""
    return NewPrediction(
        active_model_id=active_model_id,
        model_id=7,
        coin_id=coin,
        data_timestamp=at,
        phase_id=1,
        prediction=1,
        probability=0.9,
        alert_threshold=0.7,
        tag="alert",
        price_close_at_t=1e-7,
        market_cap_at_t=100.0,
        **TARGET,
        source="stream",
        evaluation_due_at=at + timedelta(minutes=5),
    )._replace(**changes)


def batch_target(active_model_id: int) -> ModelTarget:
    """A time-based target of 10 % up in 5 minutes, as a batch store names a model."""
    return ModelTarget(
        active_model_id=active_model_id,
        model_id=active_model_id,
        alert_threshold=ALERT_THRESHOLD,
        **TARGET,
        evaluation_delay=timedelta(minutes=5),
    )


def batch_of(ticks: list[tuple[str, datetime]], models: list[int]) -> BatchRows:
    """Every model's prediction of every tick, as the batch writer sends them
    (`predictions.insert_batch`'s rows)."""
    rows = BatchRows(models=[batch_target(m) for m in models])
    for coin, at in ticks:
        rows.coin_ids.append(coin)
        rows.data_timestamps.append(at)
        rows.phase_ids.append(1)
        rows.price_closes.append(1e-7)
        rows.market_caps.append(100.0)
    for m, model in enumerate(models):
        for t in range(len(ticks)):
            probability = (model % 10) / 10 + 0.05
            rows.model_index.append(m)
            rows.tick_index.append(t)
            rows.probabilities.append(probability)
            rows.predictions.append(int(probability >= 0.5))
            rows.tags.append(tag_for(probability, ALERT_THRESHOLD))
    return rows


async def add_model(conn: asyncpg.Connection, model_id: int, **columns: Any) -> int:
    """An active_models row (time-based, up 10 % in 5 min, no phases by default)."""
    defaults: dict[str, Any] = {"features": ["price_close"], "phases": None}
    return await insert_active_model(conn, model_id, **{**defaults, **columns})


async def add_metric(
    conn: asyncpg.Connection,
    coin: str,
    at: datetime,
    close: float | None,
    *,
    high: float | None = None,
    low: float | None = None,
    **columns: Any,
) -> int:
    """One coin_metrics row; high/low default to the close."""
    values: dict[str, Any] = {
        "mint": coin,
        "timestamp": at,
        "price_open": close,
        "price_high": close if high is None else high,
        "price_low": close if low is None else low,
        "price_close": close,
    }
    values.update(columns)
    names = list(values)
    quoted = ", ".join('"' + name + '"' for name in names)
    sql = (
        f"INSERT INTO coin_metrics ({quoted}) "
        f"VALUES ({', '.join(f'${i + 1}' for i in range(len(names)))}) RETURNING id"
    )
    return int(await conn.fetchval(sql, *values.values()))


async def add_prediction(
    conn: asyncpg.Connection,
    active_model_id: int,
    coin: str,
    at: datetime,
    *,
    prediction: int,
    probability: float | None = None,
    tag: str | None = None,
    alert_threshold: float = 0.7,
    **columns: Any,
) -> int:
    """A prediction carrying its model's target definition, stored as the predictor
    stores it (storage.predictions.writes.insert_predictions); returns its id.

    The target columns are copied from active_models unless given; evaluation_due_at
    is T + future_minutes for time-based targets and T for classic ones. A given
    `predicted_at` is its tick's (every prediction of a coin tick and source shares it).
    """
    model = await conn.fetchrow("SELECT * FROM active_models WHERE id = $1", active_model_id)
    assert model is not None
    if probability is None:
        probability = 0.9 if prediction == 1 else 0.2
    if tag is None:
        tag = (
            "negative"
            if probability < 0.5
            else ("alert" if probability >= alert_threshold else "positive")
        )
    target = {
        name: columns.pop(name, model[name])
        for name in (
            "target_kind",
            "target_variable",
            "target_operator",
            "target_value",
            "future_minutes",
            "price_change_percent",
            "target_direction",
        )
    }
    due = columns.pop("evaluation_due_at", None)
    if due is None:
        minutes = target["future_minutes"] if target["target_kind"] == "time_based" else 0
        due = at + timedelta(minutes=minutes or 0)
    predicted_at = columns.pop("predicted_at", None)
    row = NewPrediction(
        active_model_id=active_model_id,
        model_id=model["model_id"],
        coin_id=coin,
        data_timestamp=at,
        phase_id=columns.pop("phase_id", None),
        prediction=prediction,
        probability=probability,
        alert_threshold=alert_threshold,
        tag=tag,
        price_close_at_t=columns.pop("price_close_at_t", None),
        market_cap_at_t=columns.pop("market_cap_at_t", None),
        source=columns.pop("source", "stream"),
        evaluation_due_at=due,
        **target,
    )
    assert not columns, f"add_prediction cannot store {sorted(columns)}"
    stored = await predictions.insert_predictions(conn, [row])
    assert len(stored) == 1, "predicted before"
    if predicted_at is not None:
        await conn.execute(
            "UPDATE prediction_ticks SET predicted_at = $2 WHERE id = $1",
            stored[0].id // predictions.ID_SLOTS,
            predicted_at,
        )
    return stored[0].id


async def set_outcome(
    conn: asyncpg.Connection,
    prediction_id: int,
    result: str,
    *,
    change: float | None = None,
    reason: str | None = None,
    **fields: Any,
) -> None:
    """Write the outcome of a prediction's price path directly (statistics tests start
    from known outcomes): the change, or for `not_applicable` no row at T, and other
    tick_outcomes columns given by name.

    Verdicts are derived, never stored, so the one asked for must be the one the
    rules derive from the prediction, its target and this outcome (checked). The
    outcome is shared by the tick's predictions with the same horizon.
    """
    row = await conn.fetchrow(
        "SELECT tick_id, horizon_s, outcome_variable FROM prediction_rows WHERE id = $1",
        prediction_id,
    )
    assert row is not None
    state = evaluations.STATE_NO_ROW_AT_T if result == "not_applicable" else 0
    values = {"state": state, "actual_change_pct": change, **fields}
    names = ", ".join(values)
    await conn.execute(
        f"""
        INSERT INTO tick_outcomes (tick_id, horizon_s, variable, {names})
        VALUES ($1, $2, $3, {", ".join(f"${i}" for i in range(4, 4 + len(values)))})
        ON CONFLICT (tick_id, horizon_s, variable) DO UPDATE
        SET ({names}) = ROW({", ".join(f"excluded.{n}" for n in values)})
        """,
        *row,
        *values.values(),
    )
    await conn.execute(
        "DELETE FROM prediction_due WHERE (tick_id, horizon_s, variable) = ($1, $2, $3)", *row
    )
    derived = await conn.fetchrow(
        "SELECT evaluation_result, evaluation_reason FROM predictions WHERE id = $1",
        prediction_id,
    )
    assert derived is not None
    assert derived["evaluation_result"] == result, (
        f"prediction {prediction_id}: the rules derive {derived['evaluation_result']},"
        f" not {result}, from change {change}"
    )
    assert reason is None or derived["evaluation_reason"] is not None


async def prediction(conn: asyncpg.Connection, prediction_id: int) -> dict[str, Any]:
    row = await conn.fetchrow("SELECT * FROM predictions WHERE id = $1", prediction_id)
    assert row is not None
    return dict(row)


@asynccontextmanager
async def serve_api(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[ApiClient]:
    """The real aiohttp app on 127.0.0.1 (no actors, so no evaluator changes rows)."""
    async with served(settings, pool) as base, aiohttp.ClientSession() as http:
        yield ApiClient(http, base)


class ApiClient:
    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base

    async def call(
        self, method: str, path: str, params: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, params=params) as response:
            return response.status, await response.json()

    async def get(self, path: str, **params: Any) -> tuple[int, Any]:
        return await self.call("GET", path, {k: str(v) for k, v in params.items()})
