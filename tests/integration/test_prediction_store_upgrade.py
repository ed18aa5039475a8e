"""Upgrading a database of the old layout (one `predictions` row per model and tick) to
the prediction store of migration 0017 changes no answer of any prediction route.

The old schema is built from the migration files as they were before 0017 (kept in
tests/fixtures/migrations_v16), filled with plain SQL as the old writers and
evaluator left rows (evaluated and pending, stream and manual, time-based and
classic, a class and tag that do not follow from p, a hand-written verdict), every
route's answer is recorded, the real migrations upgrade it, and the answers are
compared.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prediction_rows import ApiClient, add_metric, serve_api
from webhook_receiver import insert_active_model

from actors.housekeeping.evaluator import Evaluator
from storage.config import Settings
from storage.db.migrate import apply_migrations
from storage.db.pool import connect, create_pool
from storage.predictions import evaluations
from storage.predictions import writes as predictions

OLD_MIGRATIONS = Path(__file__).parents[1] / "fixtures" / "migrations_v16"
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
M = timedelta(minutes=1)


async def _old_schema(conn: asyncpg.Connection) -> None:
    """The schema as the migrations before 0017 built it, recorded as applied (same
    checksums, so the real migrations apply only what came later)."""
    await apply_migrations(conn, embedded=True, directory=OLD_MIGRATIONS)


_OLD_INSERT = """
INSERT INTO predictions (active_model_id, model_id, coin_id, data_timestamp, phase_id,
    prediction, probability, alert_threshold, tag, price_close_at_t, market_cap_at_t,
    target_kind, target_variable, target_operator, target_value, future_minutes,
    price_change_percent, target_direction, source, predicted_at, evaluation_due_at,
    evaluation_result, evaluation_reason, evaluated_at, price_close_at_eval,
    eval_price_timestamp, actual_change_pct, max_gain_pct, max_gain_at, max_drawdown_pct,
    max_drawdown_at)
SELECT m.id, m.model_id, $2::text, $3::timestamptz, 2, $4::smallint, $5::float8,
       m.alert_threshold, $6::text, 1.5, 30000.0,
       m.target_kind, m.target_variable, m.target_operator, m.target_value,
       m.future_minutes, m.price_change_percent, m.target_direction, $7::text, $8::timestamptz,
       $3::timestamptz + make_interval(mins => CASE WHEN m.target_kind = 'classic' THEN 0
                                       ELSE m.future_minutes END),
       $9::text, $10::text, CASE WHEN $9::text IS NOT NULL THEN $8 + interval '6 minutes' END,
       $11::float8, CASE WHEN $11::float8 IS NOT NULL THEN $3 + interval '5 minutes' END,
       $12::float8, $13::float8,
       CASE WHEN $13::float8 IS NOT NULL THEN $3 + interval '2 minutes' END, $14::float8,
       CASE WHEN $14::float8 IS NOT NULL THEN $3 + interval '3 minutes' END
FROM active_models m WHERE m.id = $1
RETURNING id
"""


def _tag(p: float, threshold: float = 0.7) -> str:
    return "alert" if p >= threshold else ("positive" if p >= 0.5 else "negative")


async def _old_rows(conn: asyncpg.Connection) -> dict[str, int]:
    """Old rows as the old writers and evaluator stored them; {name: model id}."""
    up = await insert_active_model(conn, 11, name="Up", features=["price_close"])
    down = await insert_active_model(
        conn, 12, name="Down", features=["price_close"], target_direction="down",
        alert_threshold=0.8,
    )  # fmt: skip
    classic = await insert_active_model(
        conn, 13, name="Classic", features=["price_close"], target_kind="classic",
        target_variable="volume_sol", target_operator=">", target_value=5.0,
        future_minutes=None, price_change_percent=None, target_direction=None,
    )  # fmt: skip
    no_row = evaluations.REASON_NO_ROW_AT_T
    # (model, coin, minute, prediction, p, tag or None, source, result, reason, change)
    rows: list[tuple[Any, ...]] = []
    for i in range(12):
        coin = f"C{i % 4}"
        change = [12.0, -12.0, 1.0, None][i % 4]
        for model, pred_up in ((up, True), (down, False)):
            p = (0.05 + 0.08 * i) if pred_up else (0.95 - 0.08 * i)
            prediction = int(p >= 0.5)
            if i >= 9:  # the newest are pending
                result, reason = None, None
            elif change is None:
                result, reason = "not_applicable", no_row
            else:
                came_true = change >= 10 if pred_up else change <= -10
                result = "success" if (prediction == 1) == came_true else "failed"
                reason = None
            rows.append((model, coin, i, prediction, p, None, "stream", result, reason, change))
    # A classic target: its outcome judged the row at T (a value the old rows do not keep).
    rows.append((classic, "C0", 0, 1, 0.9, None, "stream", "success", None, 0.0))
    rows.append((classic, "C1", 1, 0, 0.3, None, "stream", None, None, None))
    # Manual predictions, one of them with a class that does not follow from p.
    rows.append((up, "C0", 20, 1, 0.45, "negative", "manual", None, None, None))
    rows.append((down, "M1", 30, 0, 0.2, None, "manual", "failed", None, -20.0))
    # A hand-written verdict the rules would not derive (0 and down 1 % is a success).
    rows.append((up, "H1", 40, 0, 0.3, None, "stream", "failed", None, -1.0))
    for model, coin, minute, prediction, p, tag, source, result, reason, change in rows:
        at = T0 + minute * M
        await conn.fetchval(
            _OLD_INSERT, model, coin, at, prediction, p, tag or _tag(p, 0.8 if model == down
            else 0.7), source, at + timedelta(seconds=3), result, reason,
            None if result is None or reason else 1.5 * (1 + (change or 0) / 100),
            None if result is None or reason else change,
            None if result is None or reason else 14.0,
            None if result is None or reason else -6.0,
        )  # fmt: skip
    for minute in range(15):
        await add_metric(conn, "C0", T0 + minute * M, 1.5 + minute / 100)
    return {"up": up, "down": down, "classic": classic}


_ROUTES = [
    ("/api/predictions", {}),
    ("/api/predictions", {"limit": 7, "offset": 3}),
    ("/api/predictions", {"active_model_id": "{up}", "limit": 5, "offset": 2}),
    ("/api/predictions", {"evaluation_result": "pending"}),
    ("/api/predictions", {"evaluation_result": "failed"}),
    ("/api/predictions", {"evaluation_result": "not_applicable"}),
    ("/api/predictions", {"tag": "alert", "coin_id": "C1"}),
    ("/api/predictions", {"model_id": 12, "probability_min": 0.3, "probability_max": 0.8}),
    ("/api/predictions", {"date_from": "2026-01-01T12:03:00+00:00", "date_to": T0 + 9 * M}),
    ("/api/predictions", {"predicted_from": T0 + 30 * M}),
    ("/api/predictions/latest/C0", {}),
    ("/api/predictions/latest/M1", {}),
    ("/api/models/{up}/coins/C0/details", {}),
    ("/api/models/{down}/coins/C2/details", {"limit": 2}),
    ("/api/models/{classic}/coins/C0/details", {}),
    ("/api/alerts/statistics", {}),
    ("/api/alerts/statistics", {"date_from": T0 + 3 * M}),
    ("/api/models/{up}/statistics", {}),
    ("/api/models/{down}/statistics", {"target_precision": 0.6}),
    ("/api/models", {}),
]


async def _answers(
    api: ApiClient, conn: asyncpg.Connection, models: dict[str, int]
) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for path, params in _ROUTES:
        url = path.format(**models)
        query = {
            k: (v.isoformat() if isinstance(v, datetime) else str(v).format(**models))
            for k, v in params.items()
        }
        status, body = await api.get(url, **query)
        assert status == 200, (url, query, body)
        answers[f"{url} {sorted(query.items())}"] = body
    # What a webhook re-reads of stored stream predictions (a batch processed again).
    for name, model in models.items():
        reports = await predictions.stored_stream_reports(
            conn, model, [f"C{i % 4}" for i in range(12)], [T0 + i * M for i in range(12)]
        )
        answers[f"webhook re-read {name}"] = sorted(reports)
    return answers


@pytest.fixture
async def old_database(empty_db_dsn: str) -> AsyncIterator[tuple[asyncpg.Pool, dict[str, int]]]:
    conn = await connect(empty_db_dsn)
    try:
        await _old_schema(conn)
        models = await _old_rows(conn)
    finally:
        await conn.close()
    pool = await create_pool(empty_db_dsn, min_size=1, max_size=4)
    try:
        yield pool, models
    finally:
        await pool.close()


async def test_every_prediction_route_answers_the_same_after_the_upgrade(
    old_database: tuple[asyncpg.Pool, dict[str, int]], settings: Settings
) -> None:
    pool, models = old_database
    async with pool.acquire() as conn:
        old_count = await conn.fetchval("SELECT count(*) FROM predictions")
        async with serve_api(settings, pool) as api:
            before = await _answers(api, conn, models)
        applied = await apply_migrations(conn, embedded=True)
        assert "0017" in applied
        assert await conn.fetchval("SELECT count(*) FROM predictions") == old_count
        # The classic verdict (judged on a value the old rows do not keep) and the
        # hand-written one are kept; the manual 1 with p = 0.45 keeps its class and tag.
        assert await conn.fetchval("SELECT count(*) FROM prediction_verdicts") == 2
        assert (
            await conn.fetchval("SELECT count(*) FROM prediction_ticks WHERE codes IS NOT NULL")
            == 1
        )
        async with serve_api(settings, pool) as api:
            after = await _answers(api, conn, models)
    assert after.keys() == before.keys()
    for key in before:
        assert _differences(before[key], after[key]) == [], (
            key,
            _differences(before[key], after[key]),
        )


def _differences(old: Any, new: Any, where: str = "") -> list[str]:
    """Where two JSON answers differ (paths and both values), to name what changed."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(old.keys() | new.keys())
        return [d for k in keys for d in _differences(old.get(k), new.get(k), f"{where}.{k}")]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [
            d
            for i, (a, b) in enumerate(zip(old, new, strict=True))
            for d in _differences(a, b, f"{where}[{i}]")
        ]
    return [] if old == new else [f"{where}: {old!r} -> {new!r}"]


async def test_an_upgraded_database_goes_on_predicting_and_evaluating(
    old_database: tuple[asyncpg.Pool, dict[str, int]],
) -> None:
    pool, models = old_database
    async with pool.acquire() as conn:
        old_ids = {r["id"] for r in await conn.fetch("SELECT id FROM predictions")}
        await apply_migrations(conn, embedded=True)
        # A model that had not predicted a migrated tick yet appends to it, with a new id.
        row = await conn.fetchrow(
            "SELECT * FROM predictions WHERE coin_id = 'C1' AND active_model_id = $1"
            " AND data_timestamp = $2",
            models["up"],
            T0 + 9 * M,
        )
        classic = dict(
            row, active_model_id=models["classic"], model_id=13, target_kind="classic",
            target_variable="volume_sol", target_operator=">", target_value=5.0,
            future_minutes=None, price_change_percent=None, target_direction=None,
            evaluation_due_at=row["data_timestamp"],
        )  # fmt: skip
        new = predictions.NewPrediction(
            **{k: classic[k] for k in predictions.NewPrediction._fields}
        )
        stored = await predictions.insert_predictions(conn, [new])
        assert len(stored) == 1 and stored[0].id not in old_ids
        assert await predictions.insert_predictions(conn, [new]) == []
        # The pending migrated predictions are evaluated (the coin has no rows: not
        # applicable), the others keep their verdicts.
        kept = dict(
            await conn.fetch(
                "SELECT id, evaluation_result FROM predictions WHERE evaluation_result IS NOT NULL"
            )
        )
        evaluated = await Evaluator(pool, grace_seconds=0, interval=1, page_size=3).evaluate_due()
        assert evaluated == await conn.fetchval(
            "SELECT count(*) FROM predictions WHERE evaluation_result IS NOT NULL"
        ) - len(kept)
        assert (
            await conn.fetchval("SELECT count(*) FROM predictions WHERE evaluation_result IS NULL")
            == 0
        )
        after = dict(await conn.fetch("SELECT id, evaluation_result FROM predictions"))
        assert {i: after[i] for i in kept} == kept
