"""The evaluator measured alone: `bench.py evaluator`.

Builds `ticks` coin ticks (one coin each, a price row at T and one a minute
for the horizon after it) predicted by `models` models whose horizons are
spread over `horizons` values, all due, and lets the evaluator's own page
statement (`storage.predictions.evaluations.evaluate_due_page`) judge them page by page.
Reports the cost per evaluated coin tick: wall time, PostgreSQL CPU and this
process's CPU, and how much the prediction tables grew (the outcomes' row
versions).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import asyncpg

from storage.predictions import evaluations
from storage.predictions import writes as predictions

_MODELS_SQL = """
INSERT INTO active_models (model_id, name, model_type, target_kind, future_minutes,
    price_change_percent, target_direction, features, file_path, file_sha256)
SELECT 9000 + i, 'bench-' || i, 'xgboost', 'time_based', 5 + 5 * (i % $2), 5.0, 'up',
       '[]'::jsonb, '', ''
FROM generate_series(0, $1 - 1) AS i
RETURNING id
"""

# One coin per tick: a row at T, then one a minute up to the longest horizon (a walk
# around 1e-7 SOL, with highs and lows).
_PRICES_SQL = """
INSERT INTO coin_metrics (mint, "timestamp", price_open, price_high, price_low, price_close,
                          market_cap_close, volume_sol)
SELECT 'eval-' || c, $2::timestamptz + make_interval(mins => m),
       p, p * 1.02, p * 0.97, p, p * 1e9, 1.5
FROM generate_series(0, $1 - 1) AS c,
     generate_series(0, $3) AS m,
     LATERAL (SELECT (1e-7 * (1 + ((c * 7 + m * 13) % 40) / 100.0))::numeric AS p) AS price
"""

# Every model predicts every tick (one tick row each, as the batch writer stores them);
# each (tick, horizon) is queued for the evaluator.
_PREDICTIONS_SQL = """
WITH ticks AS (
    INSERT INTO prediction_ticks (coin_id, data_timestamp, source, price_close_at_t,
                                  market_cap_at_t, target_ids, probabilities)
    SELECT 'eval-' || c, $2::timestamptz, 's', 1e-7, 100.0, $3::int[],
           ARRAY(SELECT CASE WHEN (c + x) % 2 = 1 THEN 0.8 ELSE 0.2 END
                 FROM unnest($3::int[]) AS x)::float8[]
    FROM generate_series(0, $1 - 1) AS c
    RETURNING id, data_timestamp
)
INSERT INTO prediction_due (tick_id, horizon_s, variable, due_at)
SELECT DISTINCT t.id, g.horizon_s, g.outcome_variable,
       t.data_timestamp + make_interval(secs => g.horizon_s)
FROM ticks t, prediction_targets g
WHERE g.id = ANY($3::int[])
"""

_TABLES = ("prediction_ticks", "prediction_targets", "tick_outcomes", "prediction_due")
_SIZE_SQL = "SELECT sum(pg_total_relation_size(t::regclass))::bigint FROM unnest($1::text[]) AS t"


async def _targets(conn: asyncpg.Connection, active_model_ids: list[int]) -> list[int]:
    rows = await conn.fetch(
        "SELECT * FROM active_models WHERE id = ANY($1::bigint[])", active_model_ids
    )
    targets = [
        predictions.ModelTarget(
            r["id"],
            r["model_id"],
            0.7,
            r["target_kind"],
            r["target_variable"],
            r["target_operator"],
            r["target_value"],
            r["future_minutes"],
            r["price_change_percent"],
            r["target_direction"],
            timedelta(minutes=r["future_minutes"]),
        )
        for r in rows
    ]
    ids = await predictions.target_ids(conn, targets)
    return [i for i in ids if i is not None]


async def run(
    dsn: str,
    *,
    ticks: int,
    models: int,
    horizons: int,
    page_size: int,
    postgres_meter: Callable[[], Any],
) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        t0 = await conn.fetchval("SELECT date_trunc('minute', now()) - interval '1 day'")
        ids = [r["id"] for r in await conn.fetch(_MODELS_SQL, models, horizons)]
        await conn.execute(_PRICES_SQL, ticks, t0, 5 + 5 * (horizons - 1))
        await conn.execute(_PREDICTIONS_SQL, ticks, t0, await _targets(conn, ids))
        await conn.execute("VACUUM ANALYZE coin_metrics")
        for table in _TABLES:
            await conn.execute(f"VACUUM ANALYZE {table}")
        size0 = int(await conn.fetchval(_SIZE_SQL, list(_TABLES)))
        meter, client0, started = postgres_meter(), time.process_time(), time.perf_counter()
        evaluated = pages = 0
        results: dict[str, int] = {}
        while True:
            page = await evaluations.evaluate_due_page(conn, grace_seconds=0, limit=page_size)
            pages += 1
            evaluated += len(page)
            for p in page:
                results[p.result] = results.get(p.result, 0) + 1
            if page.outcomes < page_size:
                break
        wall = time.perf_counter() - started
        client = time.process_time() - client0
        pg = float(meter.seconds())
        grown = int(await conn.fetchval(_SIZE_SQL, list(_TABLES))) - size0
    finally:
        await conn.close()
    return {
        "ticks": ticks,
        "models": models,
        "horizons": horizons,
        "page_size": page_size,
        "predictions_evaluated": evaluated,
        "by_result": results,
        "pages": pages,
        "wall_s": round(wall, 3),
        "wall_ms_per_tick": round(wall * 1000 / ticks, 4),
        "pg_cpu_ms_per_tick": round(pg * 1000 / ticks, 4),
        "client_cpu_ms_per_tick": round(client * 1000 / ticks, 4),
        "disk_bytes_per_tick": round(grown / ticks),
    }
