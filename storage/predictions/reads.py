"""Reads of stored predictions for the API: filtered pages with a real total, the
latest per model for a coin, one model's predictions for a coin with the price
history around them, and deleting a model's predictions.

Filters are fixed SQL fragments with numbered parameters; values never reach
the SQL text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from storage.predictions.evaluations import in_double

PENDING = "pending"
RESULTS = ("success", "failed", "not_applicable", PENDING)
TAGS = ("negative", "positive", "alert")

# Price history around a model's predictions for a coin: this much before the first
# prediction and after the last evaluation time.
DETAILS_MARGIN = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class PredictionRow:
    id: int
    active_model_id: int
    model_id: int
    model_name: str | None
    coin_id: str
    data_timestamp: datetime
    phase_id: int | None
    prediction: int
    probability: float
    alert_threshold: float
    tag: str
    price_close_at_t: float | None
    market_cap_at_t: float | None
    target_kind: str
    target_variable: str | None
    target_operator: str | None
    target_value: float | None
    future_minutes: int | None
    price_change_percent: float | None
    target_direction: str | None
    source: str
    predicted_at: datetime
    evaluation_due_at: datetime
    evaluation_result: str | None
    evaluation_reason: str | None
    evaluated_at: datetime | None
    price_close_at_eval: float | None
    eval_price_timestamp: datetime | None
    actual_change_pct: float | None
    max_gain_pct: float | None
    max_gain_at: datetime | None
    max_drawdown_pct: float | None
    max_drawdown_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            body[f.name] = value.isoformat() if isinstance(value, datetime) else value
        body["is_alert"] = self.tag == "alert"
        body["status"] = self.evaluation_result or PENDING
        return body


_COLUMNS = ", ".join(
    "coalesce(m.custom_name, m.name) AS model_name" if f.name == "model_name" else f"p.{f.name}"
    for f in fields(PredictionRow)
)
_FROM = "FROM predictions p LEFT JOIN active_models m ON m.id = p.active_model_id"


def _row(r: asyncpg.Record) -> PredictionRow:
    return PredictionRow(**dict(r))


@dataclass(frozen=True, slots=True)
class PredictionFilters:
    coin_id: str | None = None
    active_model_id: int | None = None
    model_id: int | None = None
    tag: str | None = None
    evaluation_result: str | None = None  # one of RESULTS; 'pending' = not evaluated
    probability_min: float | None = None
    probability_max: float | None = None
    date_from: datetime | None = None  # data_timestamp, inclusive
    date_to: datetime | None = None
    predicted_from: datetime | None = None  # predicted_at, inclusive
    predicted_to: datetime | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        args: list[Any] = []

        def add(fragment: str, value: Any) -> None:
            args.append(value)
            clauses.append(fragment.format(f"${len(args)}"))

        if self.coin_id is not None:
            add("p.coin_id = {}", self.coin_id)
        if self.active_model_id is not None:
            add("p.active_model_id = {}", self.active_model_id)
        if self.model_id is not None:
            add("p.model_id = {}", self.model_id)
        if self.tag is not None:
            add("p.tag = {}", self.tag)
        if self.evaluation_result == PENDING:
            clauses.append("p.evaluation_result IS NULL")
        elif self.evaluation_result is not None:
            add("p.evaluation_result = {}", self.evaluation_result)
        if self.probability_min is not None:
            add("p.probability >= {}", self.probability_min)
        if self.probability_max is not None:
            add("p.probability <= {}", self.probability_max)
        if self.date_from is not None:
            add("p.data_timestamp >= {}", self.date_from)
        if self.date_to is not None:
            add("p.data_timestamp <= {}", self.date_to)
        if self.predicted_from is not None:
            add("p.predicted_at >= {}", self.predicted_from)
        if self.predicted_to is not None:
            add("p.predicted_at <= {}", self.predicted_to)
        return ("WHERE " + " AND ".join(clauses) if clauses else ""), args


async def list_predictions(
    conn: asyncpg.Connection, filters: PredictionFilters, *, limit: int, offset: int
) -> tuple[int, list[PredictionRow]]:
    """(total matching, one page newest first); both read from one snapshot."""
    where, args = filters.where()
    n = len(args)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        total = await conn.fetchval(f"SELECT count(*) FROM predictions p {where}", *args)
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} {_FROM} {where} "
            f"ORDER BY p.data_timestamp DESC, p.id DESC LIMIT ${n + 1} OFFSET ${n + 2}",
            *args,
            limit,
            offset,
        )
    return int(total), [_row(r) for r in rows]


async def latest_for_coin(conn: asyncpg.Connection, coin_id: str) -> list[PredictionRow]:
    """The latest prediction of every model for this coin, by model."""
    rows = await conn.fetch(
        f"SELECT DISTINCT ON (p.active_model_id) {_COLUMNS} {_FROM} WHERE p.coin_id = $1 "
        "ORDER BY p.active_model_id, p.data_timestamp DESC, p.id DESC",
        coin_id,
    )
    return [_row(r) for r in rows]


async def model_exists(conn: asyncpg.Connection, active_model_id: int) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM active_models WHERE id = $1)", active_model_id
        )
    )


async def delete_model_predictions(conn: asyncpg.Connection, active_model_id: int) -> int:
    """Delete every prediction of one model; returns how many.

    Its model versions' target rows go: their elements on the tick rows then belong to
    no model and no reader sees them (no tick row is rewritten; retention removes
    the ticks in time). A later prediction of the model gets a new target row.
    """
    count: int = await conn.fetchval(
        """
        WITH gone AS (
            DELETE FROM prediction_targets WHERE active_model_id = $1 RETURNING id
        )
        SELECT count(*) FROM prediction_ticks t, unnest(t.target_ids) AS x(target_id)
        WHERE x.target_id IN (SELECT id FROM gone)
        """,
        active_model_id,
    )
    return int(count)


@dataclass(frozen=True, slots=True)
class PricePoint:
    timestamp: datetime
    price_close: float | None
    price_high: float | None
    price_low: float | None
    market_cap_close: float | None
    volume_sol: float | None
    change_pct: float | None  # relative to the reference price
    high_pct: float | None
    low_pct: float | None


@dataclass(frozen=True, slots=True)
class CoinDetails:
    predictions: list[PredictionRow]  # oldest first
    reference_timestamp: datetime | None  # the price row the % values are relative to
    reference_price: float | None
    window_start: datetime
    window_end: datetime
    prices: list[PricePoint]
    prices_truncated: bool
    predictions_total: int


_DETAILS_PREDICTIONS_SQL = f"""
SELECT {_COLUMNS} {_FROM}
WHERE p.active_model_id = $1 AND p.coin_id = $2
ORDER BY p.data_timestamp DESC, p.id DESC
LIMIT $3
"""

_REFERENCE_SQL = """
SELECT "timestamp", price_close FROM coin_metrics
WHERE mint = $1 AND "timestamp" <= $2 AND price_close IS NOT NULL
ORDER BY "timestamp" DESC, id DESC
LIMIT 1
"""


def _percent_of_reference(column: str) -> str:
    """SQL: the column in % of the reference price, NULL where either is beyond double
    (a collector's 1e1000 or NaN is valid numeric; its float8 cast would raise)."""
    raw = f"(CASE WHEN {in_double(column)} THEN ({column} - ref.price) / ref.price * 100 END)"
    return f"CASE WHEN {in_double(raw)} THEN {raw}::float8 END"


# Percentages in numeric, like the evaluator's, so that 1.8 against 2.0 is -10, not
# -9.999999999999998.
_PRICES_SQL = f"""
WITH ref AS (SELECT nullif($5::numeric, 0) AS price)
SELECT c."timestamp", c.price_close, c.price_high, c.price_low, c.market_cap_close,
       c.volume_sol,
       {_percent_of_reference("c.price_close")} AS change_pct,
       {_percent_of_reference("c.price_high")} AS high_pct,
       {_percent_of_reference("c.price_low")} AS low_pct
FROM coin_metrics c, ref
WHERE c.mint = $1 AND c."timestamp" >= $2 AND c."timestamp" <= $3
ORDER BY c."timestamp", c.id
LIMIT $4
"""


async def coin_details(
    conn: asyncpg.Connection,
    active_model_id: int,
    coin_id: str,
    *,
    limit: int,
    points: int,
) -> CoinDetails | None:
    """The latest `limit` predictions of a model for a coin and at most `points` price rows
    from 10 minutes before the first of them to 10 minutes after the last is due.

    None when the model has no prediction for this coin.
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await conn.fetch(_DETAILS_PREDICTIONS_SQL, active_model_id, coin_id, limit)
        if not rows:
            return None
        total = await conn.fetchval(
            "SELECT count(*) FROM predictions WHERE active_model_id = $1 AND coin_id = $2",
            active_model_id,
            coin_id,
        )
        predictions = [_row(r) for r in reversed(rows)]
        first = predictions[0]
        start = first.data_timestamp - DETAILS_MARGIN
        end = max(p.evaluation_due_at for p in predictions) + DETAILS_MARGIN
        reference = await conn.fetchrow(_REFERENCE_SQL, coin_id, first.data_timestamp)
        # The stored snapshot is the fallback when the coin's rows are gone. A price
        # beyond double (decoded as inf or nan) is no reference: the % stay empty.
        price = reference["price_close"] if reference else first.price_close_at_t
        if price is not None and not math.isfinite(price):
            price = None
        price_rows = await conn.fetch(
            _PRICES_SQL, coin_id, start, end, points + 1, None if price is None else repr(price)
        )
    prices = [PricePoint(**dict(r)) for r in price_rows[:points]]
    return CoinDetails(
        predictions=predictions,
        reference_timestamp=reference["timestamp"] if reference else None,
        reference_price=price,
        window_start=start,
        window_end=end,
        prices=prices,
        prices_truncated=len(price_rows) > points,
        predictions_total=int(total),
    )
