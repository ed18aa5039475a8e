"""The dashboard's Backtest page over the real API routes and a finished backtest."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg
from coin_rows import coin_rows, insert_rows
from integration.test_dashboard import Dashboard, dashboard_env, serve_api
from webhook_receiver import insert_active_model

from storage.backtests import store as backtests
from storage.config import Settings

__all__ = ["dashboard_env"]  # the fixture, imported for pytest to find


async def test_backtest_page_shows_the_summary_charts_and_an_alert_with_its_coin_chart(
    settings: Settings, pool: asyncpg.Pool, dashboard_env: Callable[[str, str], None]
) -> None:
    at0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    thresholds = [
        {
            "threshold": round(0.5 + 0.05 * i, 2),
            "alerts": 10 - i,
            "precision": 0.5,
            "mean_change_pct": 1.0,
            "alerts_per_hour": 2.0,
        }
        for i in range(10)
    ]
    summary = {"ticks": 40, "coins": 2, "alerts": 2, "precision": 0.5, "recall": 0.25, "f1": 1 / 3}
    summary["thresholds"] = thresholds
    async with pool.acquire() as conn:
        await insert_rows(conn, coin_rows("coinA", 20, start=at0 - timedelta(minutes=1)))
        job = await backtests.create(conn, 7, at0, at0 + timedelta(hours=1))
        await backtests.finish(
            conn,
            job.id,
            summary,
            [
                ("coinA", at0, 0.9, 1, "alert", "success", 12.0, 15.0, -2.0),
                ("coinA", at0 + timedelta(seconds=5), 0.8, 1, "alert", "failed", -3.0, 1.0, -5.0),
                ("coinA", at0 + timedelta(seconds=10), 0.2, 0, "negative", "success", 0.5, 1, -1),
            ],
        )
    async with serve_api(settings, pool) as base:
        dashboard_env(base, "")
        dashboard = Dashboard("Backtest")
        at = await dashboard.open()
        assert not dashboard.errors(), dashboard.errors()
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["ticks"] == "40"
        assert metrics["precision"] == "0.500"
        # precision and alerts/hour against threshold, cumulative change, the coin chart
        assert len(at.get("vega_lite_chart")) == 4
        alerts = at.dataframe[1].value
        assert list(alerts["tag"]) == ["alert", "alert"]


async def test_backtest_model_picker_marks_imported_shadow_models(
    settings: Settings, pool: asyncpg.Pool, dashboard_env: Callable[[str, str], None]
) -> None:
    async with pool.acquire() as conn:
        await insert_active_model(conn, 31, name="live-one")
        await insert_active_model(conn, 32, name="quiet-one", mode="shadow")
    async with serve_api(settings, pool) as base:
        dashboard_env(base, "")
        at = await Dashboard("Backtest").open()
        options = list(at.selectbox[0].options)
        assert any(o.startswith("31 live-one (imported)") for o in options), options
        assert any(o.startswith("32 quiet-one (imported, shadow)") for o in options), options
