"""Thresholds from outcomes in GET /api/models/{id}/statistics, on known live outcomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
from prediction_rows import add_model, add_prediction, serve_api, set_outcome

from storage.config import Settings

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


async def test_statistics_give_the_curve_the_reliability_and_the_lowest_threshold_for_a_precision(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        model = await add_model(conn, 21, name="Curve")
        # 40 predictions of 1 with p = 0.5 .. 0.9875; the target was reached exactly when
        # p >= 0.75. A pending and a not_applicable one say nothing and are left out.
        for i in range(40):
            p = 0.5 + i * 0.0125
            pid = await add_prediction(
                conn, model, f"C{i}", T0 + timedelta(seconds=i), prediction=1, probability=p
            )
            reached = p >= 0.75  # the target: up 10 %
            await set_outcome(
                conn, pid, "success" if reached else "failed", change=12.0 if reached else 1.0
            )
        await add_prediction(conn, model, "PENDING", T0, prediction=1, probability=0.99)
        na = await add_prediction(conn, model, "NA", T0, prediction=1, probability=0.99)
        await set_outcome(conn, na, "not_applicable", reason="no row at T")
    async with serve_api(settings, pool) as api:
        status, body = await api.get(f"/api/models/{model}/statistics?target_precision=0.9")
        assert status == 200, body
        block = body["thresholds"]
        assert block["judged"] == 40
        curve = {row["threshold"]: row for row in block["curve"]}
        assert curve[0.5] == {"threshold": 0.5, "alerts": 40, "precision": 0.5, "recall": 1.0}
        assert curve[0.75]["precision"] == 1.0 and curve[0.75]["recall"] == 1.0
        # 0.72: 22 alerts, 20 reached (0.909); 0.71: 23 alerts (0.870).
        assert block["lowest_threshold_for_target"] == 0.72
        bins = {row["bin_from"]: row for row in block["reliability"]}
        assert bins[0.5]["count"] == 8 and bins[0.5]["observed_rate"] == 0.0
        assert bins[0.9]["count"] == 8 and bins[0.9]["observed_rate"] == 1.0
        assert bins[0.0]["count"] == 0 and bins[0.0]["observed_rate"] is None

        status, body = await api.get(f"/api/models/{model}/statistics?target_precision=2")
        assert status == 400 and body["error"]["details"]["field"] == "target_precision"
