"""`GET /api/predictions/timeline`: what the overview charts are drawn from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
from prediction_rows import add_model, add_prediction, serve_api, set_outcome

from storage.config import Settings


async def test_timeline_counts_predictions_alerts_outcomes_and_delay_per_bin(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    now = datetime.now(UTC)
    async with pool.acquire() as conn:
        model = await add_model(conn, 7)
        # Two predictions 10 s after their rows, an alert 30 s after, all 2 h ago; one
        # older than the window.
        at = now - timedelta(hours=2)
        first = await add_prediction(
            conn, model, "MintA", at, prediction=1, predicted_at=at + timedelta(seconds=10)
        )
        await add_prediction(
            conn, model, "MintB", at, prediction=0, predicted_at=at + timedelta(seconds=10)
        )
        alert = await add_prediction(
            conn,
            model,
            "MintC",
            at,
            prediction=1,
            probability=0.95,
            predicted_at=at + timedelta(seconds=30),
        )
        await set_outcome(conn, first, "success", change=12.0)
        await set_outcome(conn, alert, "failed", change=-3.0)
        await add_prediction(conn, model, "MintA", now - timedelta(hours=30), prediction=0)
    async with serve_api(settings, pool) as api:
        status, body = await api.get("/api/predictions/timeline", hours=24)
        assert status == 200, body
        assert body["bin_seconds"] == 900
        assert len(body["bins"]) == 1, body["bins"]
        (one,) = body["bins"]
        assert one["active_model_id"] == model
        assert (one["predictions"], one["alerts"], one["success"], one["failed"]) == (3, 2, 1, 1)
        assert one["delay_p50_seconds"] == 10.0 and one["delay_max_seconds"] == 30.0
        started = datetime.fromisoformat(one["start"])
        assert started <= at < started + timedelta(minutes=15)

        status, body = await api.get("/api/predictions/timeline", hours=1)
        assert (status, body["bin_seconds"], body["bins"]) == (200, 60, [])

        status, body = await api.get("/api/predictions/timeline", hours=0)
        assert status == 400 and body["error"]["details"]["field"] == "hours"
        status, body = await api.get("/api/predictions/timeline", days=1)
        assert status == 400 and body["error"]["details"]["field"] == "days"
