"""Rows for outcome tests, inserted with plain SQL (the predictor is not under test here)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
from app_server import served
from webhook_receiver import insert_active_model

from storage.config import Settings


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
    """A prediction carrying its model's target definition as the predictor stores it.

    The target columns are copied from active_models unless given; evaluation_due_at
    is T + future_minutes for time-based targets and T for classic ones.
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
    values: dict[str, Any] = {
        "active_model_id": active_model_id,
        "model_id": model["model_id"],
        "coin_id": coin,
        "data_timestamp": at,
        "prediction": prediction,
        "probability": probability,
        "alert_threshold": alert_threshold,
        "tag": tag,
    }
    for name in (
        "target_kind",
        "target_variable",
        "target_operator",
        "target_value",
        "future_minutes",
        "price_change_percent",
        "target_direction",
    ):
        values[name] = columns.pop(name, model[name])
    if "evaluation_due_at" not in columns:
        minutes = values["future_minutes"] if values["target_kind"] == "time_based" else 0
        columns["evaluation_due_at"] = at + timedelta(minutes=minutes or 0)
    values.update(columns)
    names = list(values)
    sql = (
        f"INSERT INTO predictions ({', '.join(names)}) "
        f"VALUES ({', '.join(f'${i + 1}' for i in range(len(names)))}) RETURNING id"
    )
    return int(await conn.fetchval(sql, *values.values()))


async def set_outcome(
    conn: asyncpg.Connection,
    prediction_id: int,
    result: str,
    *,
    change: float | None = None,
    reason: str | None = None,
) -> None:
    """Write an outcome directly (statistics tests start from known outcomes)."""
    await conn.execute(
        """
        UPDATE predictions
        SET evaluation_result = $2, actual_change_pct = $3, evaluation_reason = $4,
            evaluated_at = now()
        WHERE id = $1
        """,
        prediction_id,
        result,
        change,
        reason,
    )


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
