"""The prediction store's upgrade migration measured: `bench.py upgrade`.

Builds a database of the old layout (the migrations before 0017, kept in
tests/fixtures/migrations_v16) holding `rows` old prediction rows (`models`
models predicting every tick, four in five evaluated), then applies the real
migrations and reports how long 0017 took (wall, PostgreSQL CPU) and the
prediction tables' size before and after.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from storage.db.migrate import apply_migrations
from storage.db.pool import connect

OLD_MIGRATIONS = Path(__file__).parents[1] / "tests" / "fixtures" / "migrations_v16"


async def apply_old_schema(conn: asyncpg.Connection) -> None:
    """The schema as the migrations before 0017 built it, recorded as applied (same
    checksums, so the real migrations apply only what came later)."""
    await apply_migrations(conn, embedded=True, directory=OLD_MIGRATIONS)


_MODELS_SQL = """
INSERT INTO active_models (model_id, name, model_type, target_kind, future_minutes,
    price_change_percent, target_direction, features, file_path, file_sha256)
SELECT 9000 + i, 'bench-' || i, 'xgboost', 'time_based', 5, 10.0, 'up', '[]'::jsonb, '', ''
FROM generate_series(0, $1 - 1) AS i
"""

# One tick a second per coin over 1000 coins; every model predicts every tick, as the
# batch writer stored them (one predicted_at per batch), four in five ticks evaluated.
_ROWS_SQL = """
INSERT INTO predictions (active_model_id, model_id, coin_id, data_timestamp, phase_id,
    prediction, probability, alert_threshold, tag, price_close_at_t, market_cap_at_t,
    target_kind, future_minutes, price_change_percent, target_direction, predicted_at,
    evaluation_due_at, evaluation_result, evaluated_at, price_close_at_eval,
    eval_price_timestamp, actual_change_pct, max_gain_pct, max_gain_at, max_drawdown_pct,
    max_drawdown_at)
SELECT a.id, a.model_id, 'bench-coin-' || lpad((k % 1000)::text, 36, '0'), ts, 2,
       (p >= 0.5)::int, p, 0.7,
       CASE WHEN p >= 0.7 THEN 'alert' WHEN p >= 0.5 THEN 'positive' ELSE 'negative' END,
       1e-7, 30000.0, 'time_based', 5, 10.0, 'up', ts + interval '1 second',
       ts + interval '5 minutes',
       CASE WHEN k % 5 <> 0 THEN CASE WHEN (p >= 0.5) = (change >= 10) THEN 'success'
                                      ELSE 'failed' END END,
       CASE WHEN k % 5 <> 0 THEN ts + interval '6 minutes' END,
       CASE WHEN k % 5 <> 0 THEN 1e-7 * (1 + change / 100) END,
       CASE WHEN k % 5 <> 0 THEN ts + interval '4 minutes' END,
       CASE WHEN k % 5 <> 0 THEN change END,
       CASE WHEN k % 5 <> 0 THEN change + 3 END,
       CASE WHEN k % 5 <> 0 THEN ts + interval '2 minutes' END,
       CASE WHEN k % 5 <> 0 THEN -4.0 END,
       CASE WHEN k % 5 <> 0 THEN ts + interval '1 minute' END
FROM generate_series(0, $1 - 1) AS k
CROSS JOIN LATERAL (SELECT timestamptz '2026-01-01' + (k / 1000) * interval '1 second' AS ts,
                           ((k * 37) % 41) - 15.0 AS change) AS g
CROSS JOIN active_models a
CROSS JOIN LATERAL (SELECT ((k * 7 + a.id * 13) % 100) / 100.0 AS p) AS q
"""

_SIZE_SQL = """
SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
WHERE c.relkind = 'r' AND c.relname IN ('predictions', 'prediction_ticks',
    'prediction_targets', 'tick_outcomes', 'prediction_due', 'prediction_verdicts')
"""


def _with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


async def run(
    dsn: str, *, rows: int, models: int, postgres_meter: Callable[[], Any]
) -> dict[str, Any]:
    name = "pp_bench_upgrade"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    conn = await connect(_with_database(dsn, name))
    try:
        await apply_old_schema(conn)
        await conn.execute(_MODELS_SQL, models)
        await conn.execute(_ROWS_SQL, rows // models)
        await conn.execute("VACUUM ANALYZE")
        old_rows = int(await conn.fetchval("SELECT count(*) FROM predictions"))
        before = int(await conn.fetchval(_SIZE_SQL))
        meter, started = postgres_meter(), time.perf_counter()
        applied = await apply_migrations(conn, embedded=True)
        wall = time.perf_counter() - started
        pg = float(meter.seconds())
        moved = int(await conn.fetchval("SELECT count(*) FROM predictions"))
        after = int(await conn.fetchval(_SIZE_SQL))
    finally:
        await conn.close()
    return {
        "old_rows": old_rows,
        "moved_rows": moved,
        "models": models,
        "applied": applied,
        "wall_s": round(wall, 2),
        "pg_cpu_s": round(pg, 2),
        "rows_per_s": round(old_rows / wall) if wall else None,
        "bytes_before": before,
        "bytes_after": after,
    }
