"""Writes of stored predictions (reads for the API live in `prediction_reads`).

The store (migration 0017, docs/prediction-store.md): a coin tick is one
`prediction_ticks` row per source holding every model's probability in arrays,
each element pointing at its model version's `prediction_targets` row (written
once, never rewritten); outcomes are `tick_outcomes` rows per (tick, horizon)
that the evaluator writes from the `prediction_due` queue this module fills.
The view `predictions` gives readers one row per prediction.

A stream batch's predictions of every model go in with ONE statement
(`insert_batch`), the capped and windowed models' too (their limits are applied
in the same transaction: `actors.scoring.store_limits`); manual predictions store their
own (`insert_predictions`), on their own tick row (source `manual`).
A prediction is unique per (active model, coin, data timestamp) over both
sources: re-processing a tick (the poller's overlap, a restart, NOTIFY and the
timer both firing) stores only the models the tick lacks, and the caller learns
which predictions are new, so webhooks are queued only for those.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol

import asyncpg

# A prediction's id: tick id * ID_SLOTS + its position on the tick (view prediction_rows).
ID_SLOTS = 1024
SOURCE_CODES = {"stream": "s", "manual": "m"}
_TAG_CODES = {"negative": 0, "positive": 1, "alert": 2}


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


class TickColumns(Protocol):
    """The tick columns `BatchRows` and `StoreArrays` share: each tick listed once."""

    coin_ids: list[str]
    data_timestamps: list[datetime]
    phase_ids: list[int | None]
    price_closes: list[float | None]
    market_caps: list[float | None]


def tick_position(
    columns: TickColumns,
    where: dict[tuple[str, datetime], int],
    coin_id: str,
    data_timestamp: datetime,
    phase_id: int | None,
    price_close: float | None,
    market_cap: float | None,
) -> int:
    """The tick's index in `columns` (`where` maps the ticks listed so far); a tick
    seen for the first time is appended."""
    key = (coin_id, data_timestamp)
    position = where.get(key)
    if position is None:
        position = where[key] = len(columns.coin_ids)
        columns.coin_ids.append(coin_id)
        columns.data_timestamps.append(data_timestamp)
        columns.phase_ids.append(phase_id)
        columns.price_closes.append(price_close)
        columns.market_caps.append(market_cap)
    return position


class BatchInsert(NamedTuple):
    """Which predictions of a `BatchRows` were not inserted (0-based positions)."""

    existing: list[int]  # predicted before (a tick processed again)
    model_gone: list[int]  # the active model was deleted meanwhile
    # The target ids this transaction looked up (with a `TargetIds`): for the caller to
    # remember once it committed.
    learned: tuple[tuple[ModelTarget, int], ...] = ()


class TargetIds:
    """The `prediction_targets` ids this process knows are committed, by model version,
    so that a batch of the same models as the last one needs no lookup statement.

    Only the caller that committed the transaction which looked them up `remember`s
    them: an id looked up (or inserted) by a transaction that rolls back is never
    taken for stored. A known id whose row is gone (DELETE /predictions of the model
    deletes its target rows) is found out by the store itself, which reports its
    elements as of a deleted model: `insert_batch` then forgets it, looks the model
    up again and stores those elements once more. Target rows are never rewritten
    and ids never reused, so an id whose row exists is that model version's.
    """

    LIMIT = 4096  # model versions remembered at most (a few per model, normally)

    def __init__(self) -> None:
        self._ids: dict[ModelTarget, int] = {}

    def get(self, model: ModelTarget) -> int | None:
        return self._ids.get(model)

    def remember(self, learned: Sequence[tuple[ModelTarget, int]]) -> None:
        """Ids looked up by a transaction that committed."""
        if len(self._ids) + len(learned) > self.LIMIT:
            self._ids.clear()
        self._ids.update(learned)

    def forget(self, models: Sequence[ModelTarget]) -> None:
        for model in models:
            self._ids.pop(model, None)


class StoredPrediction(NamedTuple):
    """A row an insert stored (RETURNING); a tuple for the same reason as NewPrediction."""

    id: int
    coin_id: str
    data_timestamp: datetime


def code_of(prediction: int, probability: float, tag: str, alert_threshold: float) -> int | None:
    """The stored code of a prediction whose class or tag does not follow from its
    probability (None, the normal case, when both do)."""
    # The rules of actors.webhooks.payload.tag_for and the view prediction_rows.
    derived_tag = (
        "alert"
        if probability >= alert_threshold
        else ("positive" if probability >= 0.5 else "negative")
    )
    if prediction == (1 if probability >= 0.5 else 0) and tag == derived_tag:
        return None
    return prediction + 2 * _TAG_CODES[tag]


def horizon_seconds(delay: timedelta) -> int:
    """evaluation_due_at - data_timestamp in whole seconds (targets are in minutes)."""
    return round(delay.total_seconds())


_TARGET_TYPES = (
    ("active_model_id", "bigint"),
    ("model_id", "bigint"),
    ("alert_threshold", "float8"),
    ("target_kind", "text"),
    ("target_variable", "text"),
    ("target_operator", "text"),
    ("target_value", "float8"),
    ("future_minutes", "int"),
    ("price_change_percent", "float8"),
    ("target_direction", "text"),
    ("horizon_s", "int"),
)
_TARGET_NAMES = ", ".join(n for n, _ in _TARGET_TYPES)
_SAME_TARGET = " AND ".join(f"g.{n} IS NOT DISTINCT FROM m.{n}" for n, _ in _TARGET_TYPES)

# The model versions' target rows, created when missing. A row another transaction
# committed after this statement's snapshot is not seen: its id comes back NULL and
# the caller asks again. A model deleted meanwhile gets no row (NULL, not an error).
_TARGETS_SQL = f"""
WITH m AS (
    SELECT * FROM unnest({", ".join(f"${i}::{t}[]" for i, (_, t) in enumerate(_TARGET_TYPES, 1))})
    WITH ORDINALITY AS m({_TARGET_NAMES}, i)
),
added AS (
    INSERT INTO prediction_targets ({_TARGET_NAMES})
    SELECT DISTINCT {_TARGET_NAMES} FROM m
    WHERE EXISTS (SELECT 1 FROM active_models a WHERE a.id = m.active_model_id)
    ON CONFLICT ON CONSTRAINT prediction_targets_once DO NOTHING
    RETURNING *
)
SELECT m.i,
       coalesce((SELECT g.id FROM added g WHERE {_SAME_TARGET}),
                (SELECT g.id FROM prediction_targets g WHERE {_SAME_TARGET})) AS id,
       EXISTS (SELECT 1 FROM active_models a WHERE a.id = m.active_model_id) AS model_exists
FROM m
ORDER BY m.i
"""


async def target_ids(conn: asyncpg.Connection, models: Sequence[ModelTarget]) -> list[int | None]:
    """Each model version's `prediction_targets` id (None: the model was deleted)."""
    if not models:
        return []
    for _ in range(3):
        rows = await conn.fetch(
            _TARGETS_SQL,
            *(
                [getattr(m, name) for m in models]
                if name != "horizon_s"
                else [horizon_seconds(m.evaluation_delay) for m in models]
                for name, _ in _TARGET_TYPES
            ),
        )
        if all(r["id"] is not None or not r["model_exists"] for r in rows):
            return [r["id"] for r in rows]
    raise RuntimeError("prediction target rows could not be read back")


# The store, for a source: parameters $1-$5 one array per tick (coin, time, phase,
# close, market cap: the ticks distinct), $6-$9 one per prediction (its tick's 0-based
# index, target id or NULL, probability, code), $10 the source. Ends with the CTEs
# `new` (position, id, tick_id, coin_id, data_timestamp) of the predictions stored and
# `raced` (position) of those this statement could not place: another transaction
# created their tick row after this statement's snapshot and it holds one of their
# models already; a new statement stores them (`_store_raced`), appending what the row
# lacks by then.
#
# Each model once per tick row, under concurrent stores (the batcher's stores in
# flight, two workers during a shard handover): `held` is the snapshot, good for
# skipping what was stored before; what is appended is decided against the row's
# current version, locked. `locked` takes the row lock before the UPDATE (in read
# committed a locking read waits for a concurrent writer, then returns the version it
# committed), so `extra` filters against the version the UPDATE writes; a row created
# after the snapshot is reached only through the INSERT's conflict, whose append is
# guarded by the same check on the locked row.
_STORE_CTES = f"""
tk AS (
    SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::int[], $4::float8[], $5::float8[])
    WITH ORDINALITY AS tk(coin_id, data_timestamp, phase_id, price_close_at_t,
                          market_cap_at_t, i)
),
el AS MATERIALIZED (
    SELECT e.*, g.active_model_id, g.horizon_s, g.outcome_variable
    FROM unnest($6::int[], $7::int[], $8::float8[], $9::smallint[])
         WITH ORDINALITY AS e(tick_index, target_id, probability, code, position)
    LEFT JOIN prediction_targets g ON g.id = e.target_id
),
held AS MATERIALIZED (
    -- An index probe per tick, whatever the table's statistics: as a join, a plan made
    -- while prediction_ticks was small (a fresh database) scans it whole, and a
    -- prepared statement keeps that plan while the table grows, until an ANALYZE.
    -- OFFSET 0 keeps the planner from turning the lateral subquery back into a join.
    SELECT tk.i, t.id, t.source, t.target_ids
    FROM tk CROSS JOIN LATERAL (
        SELECT p.id, p.source, p.target_ids FROM prediction_ticks p
        WHERE p.coin_id = tk.coin_id AND p.data_timestamp = tk.data_timestamp
        OFFSET 0
    ) AS t
),
fresh AS MATERIALIZED (
    SELECT DISTINCT ON (el.tick_index, el.active_model_id) el.*
    FROM el
    WHERE el.active_model_id IS NOT NULL
      AND NOT EXISTS (
        SELECT 1 FROM held h, unnest(h.target_ids) AS x(target_id)
        JOIN prediction_targets g ON g.id = x.target_id
        WHERE h.i = el.tick_index + 1 AND g.active_model_id = el.active_model_id
      )
    ORDER BY el.tick_index, el.active_model_id, el.position
),
grouped AS (
    SELECT f.tick_index,
           array_agg(f.target_id ORDER BY f.position) AS target_ids,
           array_agg(f.probability ORDER BY f.position) AS probabilities,
           CASE WHEN bool_or(f.code IS NOT NULL)
                THEN array_agg(f.code ORDER BY f.position) END AS codes,
           array_agg(f.position ORDER BY f.position) AS positions,
           array_agg(f.horizon_s ORDER BY f.position) AS horizons,
           array_agg(f.outcome_variable ORDER BY f.position) AS variables
    FROM fresh f
    GROUP BY f.tick_index
),
inserted AS (
    INSERT INTO prediction_ticks (coin_id, data_timestamp, source, phase_id,
        price_close_at_t, market_cap_at_t, target_ids, probabilities, codes)
    SELECT tk.coin_id, tk.data_timestamp, $10::text::"char", tk.phase_id, tk.price_close_at_t,
           tk.market_cap_at_t, g.target_ids, g.probabilities, g.codes
    FROM grouped g JOIN tk ON tk.i = g.tick_index + 1
    WHERE NOT EXISTS (SELECT 1 FROM held h WHERE h.i = tk.i AND h.source = $10::text::"char")
    -- Key order, not the batch's (row id) order: two stores holding the same ticks
    -- then wait on each other's rows in one order, never in a cycle (a deadlock).
    ORDER BY tk.coin_id, tk.data_timestamp
    -- Another writer created the tick row since this statement's snapshot: append
    -- to it rather than lose these predictions, unless the row (its committed
    -- version, locked now) holds one of their models; then `raced`.
    ON CONFLICT ON CONSTRAINT prediction_ticks_once DO UPDATE
    SET target_ids = prediction_ticks.target_ids || excluded.target_ids,
        probabilities = prediction_ticks.probabilities || excluded.probabilities,
        codes = CASE WHEN prediction_ticks.codes IS NOT NULL OR excluded.codes IS NOT NULL THEN
            coalesce(prediction_ticks.codes,
                     array_fill(NULL::smallint, ARRAY[cardinality(prediction_ticks.target_ids)]))
            || coalesce(excluded.codes,
                        array_fill(NULL::smallint, ARRAY[cardinality(excluded.target_ids)]))
        END
    WHERE NOT EXISTS (
        SELECT 1 FROM prediction_targets have JOIN prediction_targets come
            ON come.active_model_id = have.active_model_id
        WHERE have.id = ANY (prediction_ticks.target_ids) AND come.id = ANY (excluded.target_ids)
    )
    RETURNING id, coin_id, data_timestamp, cardinality(target_ids) AS total
),
locked AS MATERIALIZED (
    SELECT h.i - 1 AS tick_index, t.id, t.target_ids
    FROM held h JOIN prediction_ticks t ON t.id = h.id
    WHERE h.source = $10::text::"char" AND h.i - 1 IN (SELECT tick_index FROM grouped)
    ORDER BY t.id
    FOR NO KEY UPDATE OF t
),
extra AS (
    SELECT f.tick_index,
           array_agg(f.target_id ORDER BY f.position) AS target_ids,
           array_agg(f.probability ORDER BY f.position) AS probabilities,
           CASE WHEN bool_or(f.code IS NOT NULL)
                THEN array_agg(f.code ORDER BY f.position) END AS codes,
           array_agg(f.position ORDER BY f.position) AS positions,
           array_agg(f.horizon_s ORDER BY f.position) AS horizons,
           array_agg(f.outcome_variable ORDER BY f.position) AS variables
    FROM fresh f JOIN locked l ON l.tick_index = f.tick_index
    WHERE NOT EXISTS (
        SELECT 1 FROM unnest(l.target_ids) AS x(target_id)
        JOIN prediction_targets g ON g.id = x.target_id
        WHERE g.active_model_id = f.active_model_id
    )
    GROUP BY f.tick_index
),
appended AS (
    UPDATE prediction_ticks t
    SET target_ids = t.target_ids || g.target_ids,
        probabilities = t.probabilities || g.probabilities,
        codes = CASE WHEN t.codes IS NOT NULL OR g.codes IS NOT NULL THEN
            coalesce(t.codes, array_fill(NULL::smallint, ARRAY[cardinality(t.target_ids)]))
            || coalesce(g.codes, array_fill(NULL::smallint, ARRAY[cardinality(g.target_ids)]))
        END
    FROM extra g JOIN locked l ON l.tick_index = g.tick_index
    WHERE t.id = l.id
    RETURNING t.id, t.coin_id, t.data_timestamp, cardinality(t.target_ids) AS total,
              g.tick_index
),
-- Where this statement's elements start on each row: its length after the write minus
-- theirs (a concurrent append committed first is counted, not the snapshot's length).
placed AS MATERIALIZED (
    SELECT g.tick_index, i.id AS tick_id, i.coin_id, i.data_timestamp,
           i.total - cardinality(g.target_ids) AS size,
           i.total > cardinality(g.target_ids) AS appended, g.positions, g.horizons,
           g.variables
    FROM inserted i
    JOIN tk ON tk.coin_id = i.coin_id AND tk.data_timestamp = i.data_timestamp
    JOIN grouped g ON g.tick_index + 1 = tk.i
    UNION ALL
    SELECT a.tick_index, a.id, a.coin_id, a.data_timestamp, a.total - cardinality(g.target_ids),
           true, g.positions, g.horizons, g.variables
    FROM appended a JOIN extra g ON g.tick_index = a.tick_index
),
raced AS (
    SELECT f.position FROM fresh f
    WHERE NOT EXISTS (SELECT 1 FROM placed p WHERE p.tick_index = f.tick_index)
      AND NOT EXISTS (SELECT 1 FROM locked l WHERE l.tick_index = f.tick_index)
),
new AS MATERIALIZED (
    SELECT u.position, p.tick_id * {ID_SLOTS} + p.size + u.k - 1 AS id, p.tick_id,
           p.coin_id, p.data_timestamp, p.appended, u.horizon_s, u.variable
    FROM placed p,
         unnest(p.positions, p.horizons, p.variables) WITH ORDINALITY AS u(position,
                                                                           horizon_s,
                                                                           variable, k)
),
queued AS (
    INSERT INTO prediction_due (tick_id, horizon_s, variable, due_at)
    SELECT DISTINCT n.tick_id, n.horizon_s, n.variable,
           n.data_timestamp + make_interval(secs => n.horizon_s)
    FROM new n
    WHERE NOT n.appended OR NOT EXISTS (
        SELECT 1 FROM tick_outcomes o
        WHERE o.tick_id = n.tick_id AND o.horizon_s = n.horizon_s AND o.variable = n.variable
    )
    ON CONFLICT DO NOTHING
),
-- One row per element stored (its id) or raced (id NULL), by 1-based position.
outcome AS (
    SELECT position, id, coin_id, data_timestamp FROM new
    UNION ALL
    SELECT position, NULL, NULL, NULL FROM raced
)"""

_BATCH_SQL = f"""
WITH {_STORE_CTES}
SELECT coalesce(array_agg(el.position - 1 ORDER BY el.position)
                FILTER (WHERE el.active_model_id IS NOT NULL AND r.position IS NULL),
                '{{}}') AS existing,
       coalesce(array_agg(el.position - 1 ORDER BY el.position)
                FILTER (WHERE el.active_model_id IS NULL), '{{}}') AS model_gone,
       coalesce(array_agg(el.position - 1 ORDER BY el.position)
                FILTER (WHERE r.position IS NOT NULL), '{{}}') AS raced
FROM el LEFT JOIN raced r ON r.position = el.position
WHERE NOT EXISTS (SELECT 1 FROM new WHERE new.position = el.position)
"""

_ROWS_SQL = f"""
WITH {_STORE_CTES}
SELECT * FROM outcome ORDER BY position
"""

# How many statements a store may take: the second stores what a concurrent writer's
# new tick row made the first leave (`raced`); it sees that row, so a third is needed
# only when the row was deleted meanwhile.
STORE_ATTEMPTS = 4


def store_sql(tail: str) -> str:
    """The store's statement with more CTEs after `outcome` (from $11 on) and a final
    SELECT of `outcome`'s rows (see `fetch_stored`): `tail` starts with the comma that
    continues the WITH list."""
    return f"WITH {_STORE_CTES}{tail}"


@dataclass(slots=True)
class StoreArrays:
    """The store statement's parameters $1-$10 (see `_STORE_CTES`)."""

    coin_ids: list[str] = field(default_factory=list)
    data_timestamps: list[datetime] = field(default_factory=list)
    phase_ids: list[int | None] = field(default_factory=list)
    price_closes: list[float | None] = field(default_factory=list)
    market_caps: list[float | None] = field(default_factory=list)
    tick_index: list[int] = field(default_factory=list)
    target_ids: list[int | None] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    codes: list[int | None] = field(default_factory=list)
    source: str = "s"

    def only(self, elements: Sequence[int]) -> StoreArrays:
        """These elements (0-based) of the arrays, with every tick."""
        return StoreArrays(
            self.coin_ids,
            self.data_timestamps,
            self.phase_ids,
            self.price_closes,
            self.market_caps,
            [self.tick_index[k] for k in elements],
            [self.target_ids[k] for k in elements],
            [self.probabilities[k] for k in elements],
            [self.codes[k] for k in elements],
            self.source,
        )

    def parameters(self) -> list[object]:
        return [
            self.coin_ids,
            self.data_timestamps,
            self.phase_ids,
            self.price_closes,
            self.market_caps,
            self.tick_index,
            self.target_ids,
            self.probabilities,
            self.codes,
            self.source,
        ]


async def store_arrays(conn: asyncpg.Connection, rows: Sequence[NewPrediction]) -> StoreArrays:
    """Single predictions (one source) as the store's arrays; their target ids looked up."""
    models: dict[ModelTarget, int] = {}
    ticks: dict[tuple[str, datetime], int] = {}
    sources = {r.source for r in rows}
    if len(sources) != 1:
        raise ValueError(f"one source per call, not {sorted(sources)}")
    out = StoreArrays(source=SOURCE_CODES[sources.pop()])
    element_models: list[int] = []
    for r in rows:
        target = ModelTarget(
            r.active_model_id,
            r.model_id,
            r.alert_threshold,
            r.target_kind,
            r.target_variable,
            r.target_operator,
            r.target_value,
            r.future_minutes,
            r.price_change_percent,
            r.target_direction,
            r.evaluation_due_at - r.data_timestamp,
        )
        element_models.append(models.setdefault(target, len(models)))
        index = tick_position(
            out,
            ticks,
            r.coin_id,
            r.data_timestamp,
            r.phase_id,
            r.price_close_at_t,
            r.market_cap_at_t,
        )
        out.tick_index.append(index)
        out.probabilities.append(r.probability)
        out.codes.append(code_of(r.prediction, r.probability, r.tag, r.alert_threshold))
    ids = await target_ids(conn, list(models))
    out.target_ids = [ids[m] for m in element_models]
    return out


async def insert_predictions(
    conn: asyncpg.Connection, rows: Sequence[NewPrediction]
) -> list[StoredPrediction]:
    """Store the rows not stored yet (all of one source); return the ones this call stored."""
    if not rows:
        return []
    arrays = await store_arrays(conn, rows)
    records, _ = await fetch_stored(conn, _ROWS_SQL, arrays)
    return stored(records)


async def fetch_stored(
    conn: asyncpg.Connection, sql: str, arrays: StoreArrays, *more: object
) -> tuple[list[asyncpg.Record], list[list[asyncpg.Record]]]:
    """Run a store statement selecting `outcome`'s rows, again for the elements that
    raced, until none did: (the records of the stored predictions in element order,
    each statement's whole result)."""
    pending = list(range(len(arrays.target_ids)))
    done: list[tuple[int, asyncpg.Record]] = []
    results: list[list[asyncpg.Record]] = []
    for _ in range(STORE_ATTEMPTS):
        part = arrays if len(results) == 0 else arrays.only(pending)
        result = await conn.fetch(sql, *part.parameters(), *more)
        results.append(result)
        raced = []
        for r in result:
            element = pending[r["position"] - 1]
            if r["id"] is None:
                raced.append(element)
            else:
                done.append((element, r))
        if not raced:
            done.sort(key=lambda pair: pair[0])
            return [r for _, r in done], results
        pending = raced
    raise RuntimeError("predictions raced with other writers on every attempt")


def stored(result: Sequence[asyncpg.Record]) -> list[StoredPrediction]:
    return [StoredPrediction(r["id"], r["coin_id"], r["data_timestamp"]) for r in result]


async def insert_batch(
    conn: asyncpg.Connection, rows: BatchRows, known: TargetIds | None = None
) -> BatchInsert:
    """Insert a batch's predictions of every model in one statement; say which were not
    inserted (normally none). The target ids of the models `known` holds are not looked
    up (see `TargetIds`); the others' are, and come back in `learned`."""
    if not rows.model_index:
        return BatchInsert([], [])
    ids: list[int | None] = [None if known is None else known.get(m) for m in rows.models]
    cached = [i is not None for i in ids]
    missing = [m for m, hit in enumerate(cached) if not hit]
    if missing:
        looked = await target_ids(conn, [rows.models[m] for m in missing])
        for m, target_id in zip(missing, looked, strict=True):
            ids[m] = target_id
    arrays = StoreArrays(
        rows.coin_ids,
        rows.data_timestamps,
        rows.phase_ids,
        rows.price_closes,
        rows.market_caps,
        rows.tick_index,
        [ids[m] for m in rows.model_index],
        rows.probabilities,
        [
            code_of(p, q, t, rows.models[m].alert_threshold)
            for p, q, t, m in zip(
                rows.predictions, rows.probabilities, rows.tags, rows.model_index, strict=True
            )
        ],
        "s",
    )
    existing: list[int] = []
    gone: list[int] = []
    pending = list(range(len(rows.model_index)))
    for attempt in range(STORE_ATTEMPTS):
        # Normally one statement; the elements that raced again (see `_STORE_CTES`), and
        # those of a known target id whose row is gone, with the id looked up again.
        part = arrays if attempt == 0 else arrays.only(pending)
        record = await conn.fetchrow(_BATCH_SQL, *part.parameters())
        assert record is not None
        existing += [pending[k] for k in record["existing"]]
        dropped = [pending[k] for k in record["model_gone"]]
        stale = [k for k in dropped if cached[rows.model_index[k]]]
        gone += [k for k in dropped if not cached[rows.model_index[k]]]
        if stale:
            models = sorted({rows.model_index[k] for k in stale})
            assert known is not None
            known.forget([rows.models[m] for m in models])
            looked = await target_ids(conn, [rows.models[m] for m in models])
            for m, target_id in zip(models, looked, strict=True):
                ids[m], cached[m] = target_id, False
            for k in stale:
                arrays.target_ids[k] = ids[rows.model_index[k]]
        if not record["raced"] and not stale:
            learned = tuple(
                (rows.models[m], i)
                for m, i in enumerate(ids)
                if known is not None and not cached[m] and i is not None
            )
            return BatchInsert(sorted(existing), sorted(gone), learned)
        pending = sorted([pending[k] for k in record["raced"]] + stale)
    raise RuntimeError("predictions raced with other writers on every attempt")


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
# of actors.webhooks.payload.ReportedPrediction.
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
