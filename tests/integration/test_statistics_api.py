"""Statistics on a known set of outcomes equal hand-computed numbers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiohttp import web
from prediction_rows import add_model, add_prediction, serve_api, set_outcome

from storage.config import Settings
from storage.predictions.statistics import model_summaries
from web.openapi import documented_routes, registered_routes
from web.routes import predictions as routes_predictions
from web.routes import statistics as routes_statistics

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LATER = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)

TRAINING = {
    "training_accuracy": 0.75,
    "training_precision": 0.8,
    "training_recall": 0.6,
    "training_f1": 0.69,
    "roc_auc": 0.81,
}


@dataclass
class Fixture:
    a: int
    b: int
    c: int  # imported, never predicted


async def _outcomes(conn: asyncpg.Connection) -> Fixture:
    a = await add_model(conn, 11, name="Alpha", training_metrics=TRAINING)
    b = await add_model(conn, 12, name="Beta", is_active=False)
    c = await add_model(conn, 13, name="Gamma")
    # (model, coin, time, prediction, probability, outcome, actual change %)
    rows = [
        (a, "P1", T0, 1, 0.9, "success", 20.0),  # alert
        (a, "P2", T0, 1, 0.8, "success", 15.0),  # alert
        (a, "P3", T0, 1, 0.75, "failed", -5.0),  # alert
        (a, "P4", T0, 1, 0.6, "failed", 3.0),  # positive
        (a, "P5", T0, 0, 0.1, "success", 1.0),  # negative
        (a, "P6", T0, 0, 0.2, "failed", 25.0),  # negative
        (a, "P7", T0, 1, 0.95, None, None),  # alert, pending
        (a, "P8", T0, 0, 0.3, "not_applicable", None),  # negative
        (b, "Q1", T0, 1, 0.9, "failed", -8.0),  # alert
        (b, "Q2", T0, 0, 0.4, "success", -2.0),  # negative
        (b, "Q3", T0, 1, 0.55, None, None),  # positive, pending
        (b, "Q4", LATER, 1, 0.99, "success", 50.0),  # alert, a month later
    ]
    for i, (model, coin, at, pred, p, result, change) in enumerate(rows):
        pid = await add_prediction(conn, model, coin, at + i * S, prediction=pred, probability=p)
        if result is not None:
            await set_outcome(
                conn, pid, result, change=change, reason="test" if change is None else None
            )
    return Fixture(a, b, c)


async def test_alert_statistics_equal_hand_computed_numbers(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        f = await _outcomes(conn)
    async with serve_api(settings, pool) as api:
        status, body = await api.get("/api/alerts/statistics")
        assert status == 200
        assert (body["total"], body["pending"], body["evaluated"]) == (12, 2, 10)
        assert (body["success"], body["failed"], body["not_applicable"]) == (5, 4, 1)
        assert body["success_rate"] == pytest.approx(5 / 9)
        assert body["alerts"] == {
            "total": 6,
            "pending": 1,
            "evaluated": 5,
            "success": 3,
            "failed": 2,
            "not_applicable": 0,
            "success_rate": pytest.approx(3 / 5),
        }
        assert body["non_alerts"] == {
            "total": 6,
            "pending": 1,
            "evaluated": 5,
            "success": 2,
            "failed": 2,
            "not_applicable": 1,
            "success_rate": 0.5,
        }
        assert body["live"]["confusion_matrix"] == {"tp": 3, "fp": 3, "tn": 2, "fn": 1}
        assert body["live"]["precision"] == 0.5
        assert body["live"]["recall"] == 0.75
        assert body["live"]["accuracy"] == pytest.approx(5 / 9)
        assert body["alert_changes"] == {
            "alerts_with_change": 5,
            "profit_pct": pytest.approx(85),
            "loss_pct": pytest.approx(-13),
            "net_pct": pytest.approx(72),
        }
        by_model = {m["active_model_id"]: m for m in body["models"]}
        assert set(by_model) == {f.a, f.b}  # Gamma has no predictions
        assert by_model[f.a]["name"] == "Alpha"
        assert (by_model[f.a]["total"], by_model[f.b]["total"]) == (8, 4)
        assert by_model[f.b]["is_active"] is False
        assert by_model[f.b]["alert_changes"]["net_pct"] == pytest.approx(42)

        # A month window without Q4, and one model.
        status, body = await api.get(
            "/api/alerts/statistics", date_from="2026-01-01T00:00:00Z", date_to="2026-01-31"
        )
        assert status == 200
        assert body["filters"]["date_to"] == "2026-01-31T00:00:00+00:00"
        assert (body["total"], body["alerts"]["success"], body["alerts"]["failed"]) == (11, 2, 2)
        assert body["alert_changes"]["profit_pct"] == pytest.approx(35)
        assert body["alert_changes"]["net_pct"] == pytest.approx(22)
        status, body = await api.get("/api/alerts/statistics", active_model_id=f.b)
        assert (body["total"], [m["active_model_id"] for m in body["models"]]) == (4, [f.b])

        for params, name in [
            ({"active_model_id": "x"}, "active_model_id"),
            ({"date_from": "yesterday"}, "date_from"),
            ({"date_from": "2026-02-01", "date_to": "2026-01-01"}, "date_to"),
            ({"model": "1"}, "model"),
        ]:
            status, body = await api.get("/api/alerts/statistics", **params)
            assert status == 400, params
            assert body["error"]["details"]["field"] == name
            assert name in body["error"]["message"]


async def test_model_statistics_next_to_training_metrics(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        f = await _outcomes(conn)
    async with serve_api(settings, pool) as api:
        status, body = await api.get(f"/api/models/{f.a}/statistics")
        assert status == 200
        assert (body["active_model_id"], body["model_id"], body["name"]) == (f.a, 11, "Alpha")
        assert (body["total"], body["pending"], body["success"], body["failed"]) == (8, 1, 3, 3)
        assert body["live"]["confusion_matrix"] == {"tp": 2, "fp": 2, "tn": 1, "fn": 1}
        assert body["training_metrics"] == TRAINING
        assert body["comparison"]["precision"] == {"training": 0.8, "live": 0.5}
        assert body["comparison"]["recall"] == {"training": 0.6, "live": pytest.approx(2 / 3)}
        assert body["target"]["target_direction"] == "up"

        status, body = await api.get(f"/api/models/{f.c}/statistics")
        assert status == 200
        assert (body["total"], body["success_rate"], body["live"]["precision"]) == (0, None, None)

        status, body = await api.get("/api/models/999/statistics")
        assert status == 404

        status, body = await api.get(f"/api/models/{f.b}/statistics", date_from="2026-01-15")
        assert (body["total"], body["alerts"]["success"]) == (1, 1)


async def test_model_summaries_for_the_model_list(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        f = await _outcomes(conn)
        summaries = await model_summaries(conn, [f.a, f.c])
    assert set(summaries) == {f.a, f.c}
    alpha = summaries[f.a]
    assert (alpha.predictions, alpha.pending, alpha.success, alpha.failed) == (8, 1, 3, 3)
    assert alpha.live_success_rate == 0.5
    assert alpha.last_prediction_at is not None
    assert summaries[f.c].predictions == 0
    assert summaries[f.c].live_success_rate is None
    assert summaries[f.c].as_dict()["last_prediction_at"] is None


def test_prediction_and_statistics_routes_are_all_documented_in_openapi() -> None:
    app = web.Application()
    app.add_routes(routes_predictions.routes)
    app.add_routes(routes_statistics.routes)
    mine = registered_routes(app)
    assert mine == {
        ("GET", "/api/alerts/statistics"),
        ("GET", "/api/models/{id}/statistics"),
        ("GET", "/api/predictions"),
        ("GET", "/api/predictions/latest/{coin_id}"),
        ("GET", "/api/models/{id}/coins/{coin_id}/details"),
        ("DELETE", "/api/models/{id}/predictions"),
    }
    assert mine <= documented_routes()
