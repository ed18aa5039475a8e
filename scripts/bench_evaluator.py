"""The evaluator measured alone: `bench.py evaluator`.

Builds `ticks` coin ticks (one coin each, a price row at T and one a minute
for the horizon after it) predicted by `models` models whose horizons are
spread over `horizons` values, all due, and lets the evaluator's own page
statement (`storage.evaluations.evaluate_due_page`) judge them page by page.
Reports the cost per evaluated coin tick: wall time, PostgreSQL CPU and this
process's CPU, and how much the prediction tables grew (the outcomes' row
versions).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import asyncpg

from storage import evaluations

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

_PREDICTIONS_SQL = """
INSERT INTO predictions (active_model_id, model_id, coin_id, data_timestamp, prediction,
    probability, alert_threshold, tag, price_close_at_t, market_cap_at_t, target_kind,
    future_minutes, price_change_percent, target_direction, evaluation_due_at)
SELECT a.id, a.model_id, 'eval-' || c, $2::timestamptz, (c + a.id) % 2,
       CASE WHEN (c + a.id) % 2 = 1 THEN 0.8 ELSE 0.2 END, 0.7,
       CASE WHEN (c + a.id) % 2 = 1 THEN 'alert' ELSE 'negative' END, 1e-7, 100.0,
       a.target_kind, a.future_minutes, a.price_change_percent, a.target_direction,
       $2::timestamptz + make_interval(mins => a.future_minutes)
FROM generate_series(0, $1 - 1) AS c, active_models a
WHERE a.id = ANY($3::bigint[])
"""

_SIZE_SQL = "SELECT pg_total_relation_size('predictions')"


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
        await conn.execute(_PREDICTIONS_SQL, ticks, t0, ids)
        await conn.execute("VACUUM ANALYZE coin_metrics")
        await conn.execute("VACUUM ANALYZE predictions")
        size0 = int(await conn.fetchval(_SIZE_SQL))
        meter, client0, started = postgres_meter(), time.process_time(), time.perf_counter()
        evaluated = pages = 0
        results: dict[str, int] = {}
        while True:
            page = await evaluations.evaluate_due_page(conn, grace_seconds=0, limit=page_size)
            pages += 1
            evaluated += len(page)
            for p in page:
                results[p.result] = results.get(p.result, 0) + 1
            if len(page) < page_size:
                break
        wall = time.perf_counter() - started
        client = time.process_time() - client0
        pg = float(meter.seconds())
        grown = int(await conn.fetchval(_SIZE_SQL)) - size0
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
