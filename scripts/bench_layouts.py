"""Candidate prediction-store layouts measured side by side: `bench.py layouts`.

Issue 19 asks for a coin tick stored once, each model's result compact, the
target definition once per model version and outcomes once per (tick,
horizon). Two ways to hold the models' results are measured here on the same
data, in scratch schemas of one database, with the statements a batch writer
would send (one per batch of ticks):

- `current`: the store as built (migration 0017) through
  `storage.predictions.writes.insert_batch`, outcomes written by the evaluator's page
  statement (made due with a negative grace; the price paths are empty here).
  Before 0017 this was the wide `predictions` table (benchmarks.md keeps those
  figures).
- `narrow`: a tick row (coin, time, source, phase, price and market cap at T,
  predicted_at) and one `(tick_id, target_id, probability)` row per model with
  its primary key and a per-model index.
- `arrays`: the tick row with the models' target ids (`int[]`) and probabilities
  (`float8[]`) on it.

Both new layouts reference a `prediction_targets` row per model version and
write one outcome row per (tick, horizon). Reported per coin tick: wall time
and PostgreSQL CPU of the inserts, and bytes on disk (tables, TOAST, indexes)
after every tick has its outcome.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from storage.predictions import evaluations
from storage.predictions import writes as predictions
from storage.predictions.writes import BatchRows, ModelTarget

_COMMON_DDL = """
CREATE SCHEMA {s};
CREATE TABLE {s}.prediction_targets (
    id                   integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    active_model_id      bigint NOT NULL,
    model_id             bigint NOT NULL,
    alert_threshold      double precision NOT NULL,
    target_kind          text NOT NULL,
    target_variable      text,
    target_operator      text,
    target_value         double precision,
    future_minutes       integer,
    price_change_percent double precision,
    target_direction     text,
    horizon_seconds      integer NOT NULL
);
CREATE TABLE {s}.prediction_ticks (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    coin_id          varchar(64) NOT NULL,
    data_timestamp   timestamptz NOT NULL,
    source           "char" NOT NULL DEFAULT 's',
    phase_id         integer,
    price_close_at_t double precision,
    market_cap_at_t  double precision,
    predicted_at     timestamptz NOT NULL DEFAULT now(){extra},
    UNIQUE (coin_id, data_timestamp, source)
);
CREATE INDEX ON {s}.prediction_ticks (data_timestamp DESC, id DESC);
CREATE TABLE {s}.tick_outcomes (
    tick_id              bigint NOT NULL,
    horizon_seconds      integer NOT NULL,
    state                smallint NOT NULL,
    evaluated_at         timestamptz NOT NULL DEFAULT now(),
    price_close_at_eval  double precision,
    eval_price_timestamp timestamptz,
    actual_change_pct    double precision,
    max_gain_pct         double precision,
    max_gain_at          timestamptz,
    max_drawdown_pct     double precision,
    max_drawdown_at      timestamptz,
    PRIMARY KEY (tick_id, horizon_seconds)
);
"""

_ARRAYS_EXTRA = """,
    target_ids       integer[] NOT NULL,
    probabilities    double precision[] NOT NULL"""

_NARROW_DDL = """
CREATE TABLE {s}.prediction_scores (
    tick_id     bigint NOT NULL,
    target_id   integer NOT NULL,
    probability double precision NOT NULL,
    PRIMARY KEY (tick_id, target_id)
);
CREATE INDEX ON {s}.prediction_scores (target_id, tick_id);
"""

_TICK_PARAMS = "$1::text[], $2::timestamptz[], $3::int[], $4::float8[], $5::float8[]"

_ARRAYS_INSERT = f"""
INSERT INTO {{s}}.prediction_ticks (coin_id, data_timestamp, phase_id, price_close_at_t,
                                  market_cap_at_t, target_ids, probabilities)
SELECT t.coin_id, t.ts, t.phase, t.price, t.cap, $6::int[],
       ($7::float8[])[(t.i - 1) * $8 + 1 : t.i * $8]
FROM unnest({_TICK_PARAMS}) WITH ORDINALITY AS t(coin_id, ts, phase, price, cap, i)
ON CONFLICT DO NOTHING
"""

_NARROW_INSERT = f"""
WITH t AS (
    INSERT INTO {{s}}.prediction_ticks (coin_id, data_timestamp, phase_id, price_close_at_t,
                                      market_cap_at_t)
    SELECT * FROM unnest({_TICK_PARAMS})
    ON CONFLICT DO NOTHING
    RETURNING id, coin_id, data_timestamp
), k AS (
    SELECT t.id, u.i FROM t
    JOIN unnest($1::text[], $2::timestamptz[]) WITH ORDINALITY AS u(coin_id, ts, i)
      ON u.coin_id = t.coin_id AND u.ts = t.data_timestamp
)
INSERT INTO {{s}}.prediction_scores (tick_id, target_id, probability)
SELECT k.id, m.target_id, ($7::float8[])[(k.i - 1) * $8 + m.j]
FROM k CROSS JOIN unnest($6::int[]) WITH ORDINALITY AS m(target_id, j)
"""

_OUTCOMES_INSERT = """
INSERT INTO {s}.tick_outcomes (tick_id, horizon_seconds, state, price_close_at_eval,
    eval_price_timestamp, actual_change_pct, max_gain_pct, max_gain_at, max_drawdown_pct,
    max_drawdown_at)
SELECT id, 600, 0, price_close_at_t * 1.05, data_timestamp + interval '9 minutes', 5.0,
       7.5, data_timestamp + interval '3 minutes', -2.5, data_timestamp + interval '1 minute'
FROM {s}.prediction_ticks WHERE id > $1 AND id <= $2
"""

_STORE_TABLES = ["prediction_ticks", "prediction_targets", "tick_outcomes", "prediction_due"]


# Reads: every model's count and mean probability (the statistics' shape), and the
# newest 100 predictions of one model (the list filtered by model).
_READS = {
    "current": (
        "SELECT active_model_id, count(*), avg(probability) FROM predictions GROUP BY 1",
        "SELECT id, probability FROM predictions WHERE active_model_id = $1"
        " ORDER BY data_timestamp DESC, id DESC LIMIT 100",
    ),
    "narrow": (
        "SELECT target_id, count(*), avg(probability) FROM {s}.prediction_scores GROUP BY 1",
        "SELECT t.id, p.probability FROM {s}.prediction_ticks t"
        " JOIN {s}.prediction_scores p ON p.tick_id = t.id AND p.target_id = $1"
        " ORDER BY t.data_timestamp DESC, t.id DESC LIMIT 100",
    ),
    "arrays": (
        "SELECT u.target_id, count(*), avg(u.probability) FROM {s}.prediction_ticks t,"
        " unnest(t.target_ids, t.probabilities) AS u(target_id, probability) GROUP BY 1",
        "SELECT t.id, t.probabilities[array_position(t.target_ids, $1::int)]"
        " FROM {s}.prediction_ticks t WHERE t.target_ids @> ARRAY[$1::int]"
        " ORDER BY t.data_timestamp DESC, t.id DESC LIMIT 100",
    ),
}


async def _reads(conn: asyncpg.Connection, layout: str, model: int) -> dict[str, float]:
    """Median wall time of each read over 5 runs (ms)."""
    timings: dict[str, float] = {}
    for name, sql in zip(("per_model_stats_ms", "model_page_ms"), _READS[layout], strict=True):
        sql = sql.format(s=f"layout_{layout}")
        args = [] if "$1" not in sql else [model]
        runs = []
        for _ in range(5):
            started = time.perf_counter()
            await conn.fetch(sql, *args)
            runs.append(time.perf_counter() - started)
        timings[name] = round(sorted(runs)[2] * 1000, 2)
    return timings


# Moving today's rows into the arrays layout, as an upgrade migration would: targets by
# DISTINCT, one tick row per (coin, time, source) with the models' arrays in id order,
# one outcome per (tick, horizon) from the oldest evaluation. A target is found by a
# text key of its columns (a hash join; IS NOT DISTINCT FROM over eleven columns is not).
_TARGET_KEY = """concat_ws('|', {p}active_model_id, {p}model_id, {p}alert_threshold, {p}target_kind,
    coalesce({p}target_variable, '-'), coalesce({p}target_operator, '-'),
    coalesce({p}target_value::text, '-'), coalesce({p}future_minutes::text, '-'),
    coalesce({p}price_change_percent::text, '-'), coalesce({p}target_direction, '-'), {h})"""

_MOVE_SQL = (
    """
ALTER TABLE {s}.prediction_targets ADD COLUMN key text;
INSERT INTO {s}.prediction_targets (active_model_id, model_id, alert_threshold, target_kind,
    target_variable, target_operator, target_value, future_minutes, price_change_percent,
    target_direction, horizon_seconds, key)
SELECT DISTINCT active_model_id, model_id, alert_threshold, target_kind, target_variable,
    target_operator, target_value, future_minutes, price_change_percent, target_direction,
    extract(epoch FROM evaluation_due_at - data_timestamp)::int, """
    + _TARGET_KEY.format(p="", h="extract(epoch FROM evaluation_due_at - data_timestamp)::int")
    + """
FROM predictions;
INSERT INTO {s}.prediction_ticks (coin_id, data_timestamp, source, phase_id,
    price_close_at_t, market_cap_at_t, predicted_at, target_ids, probabilities)
SELECT p.coin_id, p.data_timestamp, left(p.source, 1)::"char", min(p.phase_id),
       min(p.price_close_at_t), min(p.market_cap_at_t), min(p.predicted_at),
       array_agg(t.id ORDER BY p.id), array_agg(p.probability ORDER BY p.id)
FROM predictions p
JOIN {s}.prediction_targets t ON t.key = """
    + _TARGET_KEY.format(
        p="p.", h="extract(epoch FROM p.evaluation_due_at - p.data_timestamp)::int"
    )
    + """
GROUP BY p.coin_id, p.data_timestamp, p.source;
INSERT INTO {s}.tick_outcomes (tick_id, horizon_seconds, state, evaluated_at,
    price_close_at_eval, eval_price_timestamp, actual_change_pct, max_gain_pct, max_gain_at,
    max_drawdown_pct, max_drawdown_at)
SELECT DISTINCT ON (k.id, h.seconds) k.id, h.seconds, 0, p.evaluated_at,
       p.price_close_at_eval, p.eval_price_timestamp, p.actual_change_pct, p.max_gain_pct,
       p.max_gain_at, p.max_drawdown_pct, p.max_drawdown_at
FROM predictions p
CROSS JOIN LATERAL (
    SELECT extract(epoch FROM p.evaluation_due_at - p.data_timestamp)::int AS seconds
) h
JOIN {s}.prediction_ticks k ON k.coin_id = p.coin_id AND k.data_timestamp = p.data_timestamp
                           AND k.source = left(p.source, 1)::"char"
WHERE p.evaluation_result IS NOT NULL
ORDER BY k.id, h.seconds, p.evaluated_at, p.id;
"""
)


# Today's columns over the arrays layout, verdict derived (time-based targets; the
# classic ones would add the variable's comparison): what the API's reads would query.
_VIEW_SQL = """
CREATE VIEW {s}.predictions AS
SELECT t.id * 64 + u.k AS id, g.active_model_id, g.model_id, t.coin_id, t.data_timestamp,
       t.phase_id, (u.p >= 0.5)::int AS prediction, u.p AS probability, g.alert_threshold,
       CASE WHEN u.p >= g.alert_threshold THEN 'alert'
            WHEN u.p >= 0.5 THEN 'positive' ELSE 'negative' END AS tag,
       t.price_close_at_t, t.market_cap_at_t, g.target_kind, g.target_variable,
       g.target_operator, g.target_value, g.future_minutes, g.price_change_percent,
       g.target_direction, CASE t.source WHEN 's' THEN 'stream' ELSE 'manual' END AS source,
       t.predicted_at, t.data_timestamp + make_interval(secs => g.horizon_seconds)
           AS evaluation_due_at,
       CASE WHEN o.tick_id IS NULL THEN NULL
            WHEN o.state <> 0 THEN 'not_applicable'
            WHEN (u.p >= 0.5) = CASE g.target_direction
                     WHEN 'up' THEN o.actual_change_pct >= g.price_change_percent
                     ELSE o.actual_change_pct <= -g.price_change_percent END
                THEN 'success'
            ELSE 'failed' END AS evaluation_result,
       o.evaluated_at, o.price_close_at_eval, o.eval_price_timestamp, o.actual_change_pct,
       o.max_gain_pct, o.max_gain_at, o.max_drawdown_pct, o.max_drawdown_at
FROM {s}.prediction_ticks t
CROSS JOIN LATERAL unnest(t.target_ids, t.probabilities) WITH ORDINALITY AS u(target_id, p, k)
JOIN {s}.prediction_targets g ON g.id = u.target_id
LEFT JOIN {s}.tick_outcomes o ON o.tick_id = t.id AND o.horizon_seconds = g.horizon_seconds
"""

# The API's reads (storage/predictions/reads.py, storage/predictions/statistics.py), in short.
_API_READS = {
    "list_page": "SELECT * FROM {v} p ORDER BY p.data_timestamp DESC, p.id DESC LIMIT 100",
    "list_total": "SELECT count(*) FROM {v} p",
    "model_page": (
        "SELECT * FROM {v} p WHERE p.active_model_id = $1"
        " ORDER BY p.data_timestamp DESC, p.id DESC LIMIT 100"
    ),
    "model_total": "SELECT count(*) FROM {v} p WHERE p.active_model_id = $1",
    "coin_latest": (
        "SELECT DISTINCT ON (p.active_model_id) * FROM {v} p WHERE p.coin_id = $2"
        " ORDER BY p.active_model_id, p.data_timestamp DESC, p.id DESC"
    ),
    "statistics": (
        "SELECT active_model_id, count(*),"
        " count(*) FILTER (WHERE evaluation_result = 'success'),"
        " count(*) FILTER (WHERE evaluation_result = 'failed'),"
        " sum(actual_change_pct) FILTER (WHERE tag = 'alert') FROM {v} p"
        " GROUP BY GROUPING SETS ((active_model_id), ())"
    ),
}


async def _api_reads(conn: asyncpg.Connection, view: str) -> dict[str, float]:
    """Median of 3 runs of each API read (ms), on `view`."""
    model = await conn.fetchval(f"SELECT active_model_id FROM {view} LIMIT 1")
    coin = await conn.fetchval(f"SELECT coin_id FROM {view} LIMIT 1")
    timings: dict[str, float] = {}
    for name, sql in _API_READS.items():
        sql = sql.format(v=view)
        args = [a for i, a in ((1, model), (2, coin)) if f"${i}" in sql]
        if "$2" in sql and "$1" not in sql:
            sql = sql.replace("$2", "$1")
        runs = []
        for _ in range(3):
            started = time.perf_counter()
            await conn.fetch(sql, *args)
            runs.append(time.perf_counter() - started)
        timings[name] = round(sorted(runs)[1] * 1000, 2)
    return timings


async def _move(conn: asyncpg.Connection, meter: Callable[[], Any]) -> dict[str, Any]:
    """Time moving every row of `predictions` into a fresh arrays layout."""
    s = "layout_moved"
    await conn.execute(_COMMON_DDL.format(s=s, extra=_ARRAYS_EXTRA))
    rows = int(await conn.fetchval("SELECT count(*) FROM predictions"))

    async def move() -> None:
        async with conn.transaction():
            await conn.execute(_MOVE_SQL.format(s=s))

    wall, pg = await _timed(conn, meter, move)
    ticks = int(await conn.fetchval(f"SELECT count(*) FROM {s}.prediction_ticks"))
    outcomes = int(await conn.fetchval(f"SELECT count(*) FROM {s}.tick_outcomes"))
    moved = int(
        await conn.fetchval(f"SELECT sum(cardinality(target_ids)) FROM {s}.prediction_ticks")
    )
    return {
        "old_rows": rows,
        "moved_predictions": moved,
        "ticks": ticks,
        "outcomes": outcomes,
        "wall_s": round(wall, 2),
        "pg_cpu_s": round(pg, 2),
        "seconds_per_million_rows": round(wall * 1e6 / rows, 1) if rows else None,
    }


def _size_sql(tables: list[str]) -> str:
    return " + ".join(f"pg_total_relation_size('{t}')" for t in tables)


async def _models(conn: asyncpg.Connection, count: int) -> list[ModelTarget]:
    rows = await conn.fetch(
        """
        INSERT INTO active_models (model_id, name, model_type, target_kind, future_minutes,
            price_change_percent, target_direction, features, file_path, file_sha256)
        SELECT 7000 + i, 'layout-' || i, 'xgboost', 'time_based', 10, 5.0, 'up', '[]', '', ''
        FROM generate_series(1, $1) AS i
        RETURNING id, model_id
        """,
        count,
    )
    return [
        ModelTarget(
            r["id"],
            r["model_id"],
            0.7,
            "time_based",
            None,
            None,
            None,
            10,
            5.0,
            "up",
            timedelta(minutes=10),
        )
        for r in rows
    ]


class _Data:
    """The ticks and scores of every batch, generated once and shared by the layouts."""

    def __init__(self, ticks: int, models: int, batch: int) -> None:
        rng = random.Random(19)
        start = datetime.now(UTC) - timedelta(days=1)
        self.batches: list[tuple[list[Any], list[float]]] = []
        for offset in range(0, ticks, batch):
            n = min(batch, ticks - offset)
            coins = [f"{rng.getrandbits(160):040x}xyzpump"[:44] for _ in range(n)]
            stamps = [start + timedelta(milliseconds=offset + k) for k in range(n)]
            phases = [rng.choice([1, 2, 3]) for _ in range(n)]
            prices = [rng.uniform(1e-8, 1e-6) for _ in range(n)]
            caps = [p * 1e9 for p in prices]
            probs = [rng.random() for _ in range(n * models)]  # tick-major
            self.batches.append(([coins, stamps, phases, prices, caps], probs))


async def _timed(
    conn: asyncpg.Connection, postgres_meter: Callable[[], Any], work: Any
) -> tuple[float, float]:
    meter, started = postgres_meter(), time.perf_counter()
    await work()
    return time.perf_counter() - started, float(meter.seconds())


async def _current(
    conn: asyncpg.Connection, data: _Data, models: list[ModelTarget], meter: Callable[[], Any]
) -> dict[str, Any]:
    m = len(models)

    async def insert() -> None:
        for tick_columns, probs in data.batches:
            rows = BatchRows(models=list(models))
            rows.coin_ids, rows.data_timestamps, rows.phase_ids = tick_columns[:3]
            rows.price_closes, rows.market_caps = tick_columns[3:]
            n = len(rows.coin_ids)
            for j in range(m):
                rows.model_index += [j] * n
                rows.tick_index += list(range(n))
                ps = [probs[k * m + j] for k in range(n)]
                rows.probabilities += ps
                rows.predictions += [int(p >= 0.5) for p in ps]
                rows.tags += [
                    "alert" if p >= 0.7 else "positive" if p >= 0.5 else "negative" for p in ps
                ]
            await predictions.insert_batch(conn, rows)

    async def evaluate() -> None:
        while True:
            page = await evaluations.evaluate_due_page(conn, grace_seconds=-86400.0, limit=1000)
            if page.outcomes < 1000:
                break

    size = _size_sql(_STORE_TABLES)
    size0 = await conn.fetchval(f"SELECT {size}")
    wall, pg = await _timed(conn, meter, insert)
    inserted = await conn.fetchval(f"SELECT {size}") - size0
    eval_wall, eval_pg = await _timed(conn, meter, evaluate)
    total = await conn.fetchval(f"SELECT {size}") - size0
    figures = _figures(data, wall, pg, inserted, eval_wall, eval_pg, total)
    figures.update(await _reads(conn, "current", models[0].active_model_id))
    return figures


def _figures(
    data: _Data, wall: float, pg: float, inserted: int, eval_wall: float, eval_pg: float, total: int
) -> dict[str, Any]:
    ticks = sum(len(b[0][0]) for b in data.batches)
    return {
        "insert_wall_ms_per_tick": round(wall * 1000 / ticks, 4),
        "insert_pg_cpu_ms_per_tick": round(pg * 1000 / ticks, 4),
        "bytes_per_tick_before_outcomes": round(inserted / ticks),
        "outcome_wall_ms_per_tick": round(eval_wall * 1000 / ticks, 4),
        "outcome_pg_cpu_ms_per_tick": round(eval_pg * 1000 / ticks, 4),
        "disk_bytes_per_tick": round(total / ticks),
    }


async def _new(
    conn: asyncpg.Connection,
    data: _Data,
    models: list[ModelTarget],
    meter: Callable[[], Any],
    layout: str,
) -> dict[str, Any]:
    s = f"layout_{layout}"
    extra = _ARRAYS_EXTRA if layout == "arrays" else ""
    await conn.execute(_COMMON_DDL.format(s=s, extra=extra))
    tables = [f"{s}.prediction_targets", f"{s}.prediction_ticks", f"{s}.tick_outcomes"]
    if layout == "narrow":
        await conn.execute(_NARROW_DDL.format(s=s))
        tables.append(f"{s}.prediction_scores")
    target_ids = [
        int(
            await conn.fetchval(
                f"INSERT INTO {s}.prediction_targets (active_model_id, model_id, alert_threshold,"
                " target_kind, future_minutes, price_change_percent, target_direction,"
                " horizon_seconds) VALUES ($1, $2, 0.7, 'time_based', 10, 5.0, 'up', 600)"
                " RETURNING id",
                t.active_model_id,
                t.model_id,
            )
        )
        for t in models
    ]
    sql = (_ARRAYS_INSERT if layout == "arrays" else _NARROW_INSERT).format(s=s)

    async def insert() -> None:
        for tick_columns, probs in data.batches:
            await conn.execute(sql, *tick_columns, target_ids, probs, len(target_ids))

    async def evaluate() -> None:
        last = int(await conn.fetchval(f"SELECT coalesce(max(id), 0) FROM {s}.prediction_ticks"))
        for low in range(0, last, 1000):
            await conn.execute(_OUTCOMES_INSERT.format(s=s), low, low + 1000)

    size = _size_sql(tables)
    size0 = await conn.fetchval(f"SELECT {size}")
    wall, pg = await _timed(conn, meter, insert)
    inserted = await conn.fetchval(f"SELECT {size}") - size0
    eval_wall, eval_pg = await _timed(conn, meter, evaluate)
    total = await conn.fetchval(f"SELECT {size}") - size0
    figures = _figures(data, wall, pg, inserted, eval_wall, eval_pg, total)
    await conn.execute(f"ANALYZE {s}.prediction_ticks")
    figures.update(await _reads(conn, layout, target_ids[0]))
    return figures


async def run(
    dsn: str, *, ticks: int, models: int, batch: int, postgres_meter: Callable[[], Any]
) -> dict[str, Any]:
    data = _Data(ticks, models, batch)
    conn = await asyncpg.connect(dsn)
    try:
        targets = await _models(conn, models)
        result: dict[str, Any] = {"ticks": ticks, "models": models, "batch_ticks": batch}
        result["current"] = await _current(conn, data, targets, postgres_meter)
        for layout in ("narrow", "arrays"):
            result[layout] = await _new(conn, data, targets, postgres_meter, layout)
        result["move_current_to_arrays"] = await _move(conn, postgres_meter)
        await conn.execute(_VIEW_SQL.format(s="layout_moved"))
        await conn.execute("ANALYZE")
        result["api_reads_ms"] = {
            "current": await _api_reads(conn, "predictions"),
            "arrays_view": await _api_reads(conn, "layout_moved.predictions"),
        }
    finally:
        await conn.close()
    return result
