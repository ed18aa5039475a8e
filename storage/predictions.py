"""Writes of the `predictions` table (reads for the API live in `prediction_reads`).

A stream batch's predictions of every model go in with ONE statement
(`insert_batch`): the ticks' columns and the models' columns are sent once, and
each prediction is only (model, tick, probability, tag). Manual predictions and
models with caps or ignore windows insert their own rows (`insert_predictions`).
A prediction is unique per (active model, coin, data timestamp): re-processing
a tick (the poller's overlap, a restart, NOTIFY and the timer both firing) hits
the constraint and inserts nothing, and the caller learns which rows are new,
so webhooks are queued only for those.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

import asyncpg


class NewPrediction(NamedTuple):
    """A row to insert. A tuple, not a dataclass: ten models build one per coin tick,
    and a frozen dataclass's __init__ cost 12 us a row (4x a tuple's)."""

    active_model_id: int
    model_id: int
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
    evaluation_due_at: datetime


class ModelTarget(NamedTuple):
    """The columns of a prediction row that belong to its model, equal for all its rows."""

    active_model_id: int
    model_id: int
    alert_threshold: float
    target_kind: str
    target_variable: str | None
    target_operator: str | None
    target_value: float | None
    future_minutes: int | None
    price_change_percent: float | None
    target_direction: str | None
    evaluation_delay: timedelta  # evaluation_due_at - data_timestamp


@dataclass(slots=True)
class BatchRows:
    """A batch's stream predictions of several models, as columns.

    `models` and the tick columns are listed once; prediction k is model
    `model_index[k]`'s prediction of tick `tick_index[k]` (both 0-based).
    """

    models: list[ModelTarget] = field(default_factory=list)
    coin_ids: list[str] = field(default_factory=list)
    data_timestamps: list[datetime] = field(default_factory=list)
    phase_ids: list[int | None] = field(default_factory=list)
    price_closes: list[float | None] = field(default_factory=list)
    market_caps: list[float | None] = field(default_factory=list)
    model_index: list[int] = field(default_factory=list)
    tick_index: list[int] = field(default_factory=list)
    predictions: list[int] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)


class BatchInsert(NamedTuple):
    """Which predictions of a `BatchRows` were not inserted (0-based positions)."""

    existing: list[int]  # predicted before (a tick processed again)
    model_gone: list[int]  # the active model was deleted meanwhile


class StoredPrediction(NamedTuple):
    """A row an insert stored (RETURNING); a tuple for the same reason as NewPrediction."""

    id: int
    coin_id: str
    data_timestamp: datetime


_TYPES = {
    "active_model_id": "bigint",
    "model_id": "bigint",
    "coin_id": "text",
    "data_timestamp": "timestamptz",
    "phase_id": "int",
    "prediction": "smallint",
    "probability": "float8",
    "alert_threshold": "float8",
    "tag": "text",
    "price_close_at_t": "float8",
    "market_cap_at_t": "float8",
    "target_kind": "text",
    "target_variable": "text",
    "target_operator": "text",
    "target_value": "float8",
    "future_minutes": "int",
    "price_change_percent": "float8",
    "target_direction": "text",
    "source": "text",
    "evaluation_due_at": "timestamptz",
}
_COLUMNS = list(NewPrediction._fields)


# Columns that belong to the model, equal for every row of one model's batch: sent
# once as scalars rather than as arrays of equal values (a third less to encode).
_PER_MODEL = (frozenset(ModelTarget._fields) - {"evaluation_delay"}) | {"source"}


def insert_sql(first_param: int = 1, *, shared: bool = False) -> str:
    """The idempotent multi-row INSERT, its parameters numbered from `first_param`:
    one array per column, or (`shared`) scalars for the model's own columns."""
    params = {
        c: f"${i}::{_TYPES[c]}" + ("" if shared and c in _PER_MODEL else "[]")
        for i, c in enumerate(_COLUMNS, first_param)
    }
    if shared:
        per_row = [c for c in _COLUMNS if c not in _PER_MODEL]
        picks = ", ".join(params[c] if c in _PER_MODEL else f"u.{c}" for c in _COLUMNS)
        source = (
            f"SELECT {picks} FROM unnest({', '.join(params[c] for c in per_row)}) "
            f"AS u({', '.join(per_row)})"
        )
    else:
        source = f"SELECT * FROM unnest({', '.join(params.values())})"
    return f"""
INSERT INTO predictions ({", ".join(_COLUMNS)})
{source}
ON CONFLICT ON CONSTRAINT predictions_once_per_tick DO NOTHING
RETURNING id, coin_id, data_timestamp
"""


COLUMN_COUNT = len(_COLUMNS)
_INSERT = {shared: insert_sql(shared=shared) for shared in (False, True)}


def shares_model_fields(rows: Sequence[NewPrediction]) -> bool:
    """True when every row carries the same model fields (one model's batch)."""
    key = _model_fields(rows[0])
    return all(_model_fields(r) == key for r in rows)


_model_fields = operator.itemgetter(*(i for i, c in enumerate(_COLUMNS) if c in _PER_MODEL))


def parameters(rows: Sequence[NewPrediction], shared: bool) -> list[object]:
    """The rows in `insert_sql(shared=...)`'s parameter order."""
    return [
        getattr(rows[0], c) if shared and c in _PER_MODEL else [getattr(r, c) for r in rows]
        for c in _COLUMNS
    ]


def stored(result: Sequence[asyncpg.Record]) -> list[StoredPrediction]:
    return [StoredPrediction(r[0], r[1], r[2]) for r in result]


async def insert_predictions(
    conn: asyncpg.Connection, rows: Sequence[NewPrediction]
) -> list[StoredPrediction]:
    """Insert the rows not stored yet; return the ones this call inserted."""
    if not rows:
        return []
    shared = shares_model_fields(rows)
    return stored(await conn.fetch(_INSERT[shared], *parameters(rows, shared)))


# insert_batch's parameters, in order: one array per model field, per tick column,
# then per prediction its model and tick (0-based) and these columns.
_TICK_COLUMNS = ("coin_id", "data_timestamp", "phase_id", "price_close_at_t", "market_cap_at_t")
_SCORE_COLUMNS = ("prediction", "probability", "tag")
_BATCH_TYPES = {**_TYPES, "evaluation_delay": "interval", "model_index": "int", "tick_index": "int"}


def _unnest(columns: Sequence[str], first_param: int) -> str:
    return ", ".join(f"${i}::{_BATCH_TYPES[c]}[]" for i, c in enumerate(columns, first_param))


def _batch_pick(column: str) -> str:
    if column in ModelTarget._fields:
        return f"m.{column}"
    if column in _TICK_COLUMNS:
        return f"t.{column}"
    if column in _SCORE_COLUMNS:
        return f"p.{column}"
    if column == "source":
        return "'stream' AS source"
    assert column == "evaluation_due_at", column
    return "t.data_timestamp + m.evaluation_delay AS evaluation_due_at"


_MODEL_PARAMS = len(ModelTarget._fields)
_TICK_PARAMS = _MODEL_PARAMS + len(_TICK_COLUMNS)
_BATCH_INSERT = f"""
WITH m AS (
    SELECT * FROM unnest({_unnest(ModelTarget._fields, 1)})
    WITH ORDINALITY AS m({", ".join(ModelTarget._fields)}, i)
), t AS (
    SELECT * FROM unnest({_unnest(_TICK_COLUMNS, _MODEL_PARAMS + 1)})
    WITH ORDINALITY AS t({", ".join(_TICK_COLUMNS)}, i)
), batch AS MATERIALIZED (
    SELECT p.k - 1 AS position, a.id IS NOT NULL AS model_exists,
           {", ".join(_batch_pick(c) for c in _COLUMNS)}
    FROM unnest({_unnest(("model_index", "tick_index", *_SCORE_COLUMNS), _TICK_PARAMS + 1)})
         WITH ORDINALITY AS p(model_index, tick_index, {", ".join(_SCORE_COLUMNS)}, k)
    JOIN m ON m.i = p.model_index + 1
    JOIN t ON t.i = p.tick_index + 1
    -- A model deleted while its batch was in flight: its rows are left out, not an error.
    LEFT JOIN active_models a ON a.id = m.active_model_id
), new AS (
    INSERT INTO predictions ({", ".join(_COLUMNS)})
    SELECT {", ".join(_COLUMNS)} FROM batch WHERE model_exists
    ON CONFLICT ON CONSTRAINT predictions_once_per_tick DO NOTHING
    RETURNING active_model_id, coin_id, data_timestamp
)
SELECT coalesce(array_agg(b.position ORDER BY b.position) FILTER (WHERE b.model_exists),
                '{{}}') AS existing,
       coalesce(array_agg(b.position ORDER BY b.position) FILTER (WHERE NOT b.model_exists),
                '{{}}') AS model_gone
FROM batch b
WHERE NOT EXISTS (
    SELECT 1 FROM new
    WHERE new.active_model_id = b.active_model_id AND new.coin_id = b.coin_id
      AND new.data_timestamp = b.data_timestamp
)
"""


async def insert_batch(conn: asyncpg.Connection, rows: BatchRows) -> BatchInsert:
    """Insert a batch's predictions of every model in one statement; say which were not
    inserted (normally none)."""
    if not rows.model_index:
        return BatchInsert([], [])
    models = rows.models
    record = await conn.fetchrow(
        _BATCH_INSERT,
        *([getattr(m, name) for m in models] for name in ModelTarget._fields),
        rows.coin_ids,
        rows.data_timestamps,
        rows.phase_ids,
        rows.price_closes,
        rows.market_caps,
        rows.model_index,
        rows.tick_index,
        rows.predictions,
        rows.probabilities,
        rows.tags,
    )
    assert record is not None
    return BatchInsert(list(record["existing"]), list(record["model_gone"]))


async def open_counts(
    conn: asyncpg.Connection, active_model_id: int, coins: Sequence[str]
) -> dict[tuple[str, str], int]:
    """Open (not yet evaluated) predictions per (coin, tag), for the per-coin caps."""
    rows = await conn.fetch(
        """
        SELECT coin_id, tag, count(*) AS n FROM predictions
        WHERE active_model_id = $1 AND evaluation_result IS NULL AND coin_id = ANY($2::text[])
        GROUP BY coin_id, tag
        """,
        active_model_id,
        list(coins),
    )
    return {(r["coin_id"], r["tag"]): int(r["n"]) for r in rows}


# (coin_id, data_timestamp, prediction, probability, tag, alert_threshold): the order
# of actors.webhook_payload.ReportedPrediction.
StoredReport = tuple[str, datetime, int, float, str, float]


async def stored_stream_reports(
    conn: asyncpg.Connection,
    active_model_id: int,
    coins: Sequence[str],
    timestamps: Sequence[datetime],
) -> list[StoredReport]:
    """What a webhook reports of the model's stream predictions of these coin ticks
    that exist already.

    A batch processed again (its first run committed predictions, then the
    service stopped before the cursor moved) inserts nothing; its webhook items
    are rebuilt from the stored values, and the job's idempotency key keeps a tick
    that was queued already from being queued twice.
    """
    rows = await conn.fetch(
        """
        SELECT p.coin_id, p.data_timestamp, p.prediction, p.probability, p.tag,
               p.alert_threshold
        FROM unnest($2::text[], $3::timestamptz[]) AS k(coin_id, data_timestamp)
        JOIN predictions p ON p.active_model_id = $1 AND p.coin_id = k.coin_id
                          AND p.data_timestamp = k.data_timestamp
        WHERE p.source = 'stream'
        """,
        active_model_id,
        list(coins),
        list(timestamps),
    )
    return [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]
