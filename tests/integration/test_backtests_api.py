"""Backtests over the API: queued, run by a worker process, summarised, paged, deleted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import anyio
from coin_rows import coin_rows, insert_rows
from http_json import call_json
from service_runner import running_service
from training_service_stub import TrainingServiceStub
from waiting import wait_for

from storage.config import Settings
from storage.db.pool import connect

FEATURES = ["price_close", "volume_sol", "buy_pressure_ratio", "price_roc_5"]
MODEL = {"phases": None, "future_minutes": 1, "price_change_percent": 1.0}


async def _finished(http: aiohttp.ClientSession, backtest_id: int) -> dict[str, Any] | None:
    status, body = await call_json(http, "GET", f"/api/backtests/{backtest_id}")
    assert status == 200, body
    return body if body["status"] in ("done", "failed") else None


async def test_a_backtest_requested_over_the_api_runs_in_a_worker_and_reports_its_ticks(
    settings: Settings, db_dsn: str
) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    conn = await connect(db_dsn)
    try:
        for i, mint in enumerate(("coinA", "coinB", "coinC")):
            await insert_rows(conn, coin_rows(mint, 60, start=start, seed=i))
    finally:
        await conn.close()
    async with TrainingServiceStub() as ts:
        ts.add_model(7, "xgboost", FEATURES, **MODEL)
        ts.add_model(8, "random_forest", FEATURES, **MODEL)
        settings = settings.replace(training_service_api_url=ts.base_url)
        async with (
            running_service(settings) as service,
            aiohttp.ClientSession(f"http://127.0.0.1:{service.web_port}") as http,
        ):
            # Bad input: a 4xx naming the field, nothing queued.
            for body, field in (
                ({}, "model_id"),
                ({"model_id": 7, "from": "last week"}, "from"),
                ({"model_id": 7, "from": "2026-02-01T00:00:00Z", "to": "2026-01-01"}, "from"),
                ({"model_id": 7, "speed": 2}, "speed"),
            ):
                async with http.post("/api/backtests", json=body) as resp:
                    assert resp.status == 422, body
                    assert (await resp.json())["error"]["details"]["field"] == field
            # A model the Training Service does not have: refused at once, nothing queued.
            async with http.post("/api/backtests", json={"model_id": 99}) as resp:
                assert resp.status == 404
            assert (await call_json(http, "GET", "/api/backtests"))[1]["items"] == []

            # While model 8's download hangs, its backtest runs and is deleted: the worker
            # is stopped and the next backtest runs.
            ts.download_gate = anyio.Event()
            async with http.post("/api/backtests", json={"model_id": 8}) as resp:
                assert resp.status == 202
                stuck = (await resp.json())["id"]

            async def running() -> bool:
                _, body = await call_json(http, "GET", f"/api/backtests/{stuck}")
                return bool(body["status"] == "running")

            await wait_for(running, timeout=30, what="the first backtest running")
            await wait_for(lambda: ts.downloads(8) == 1, timeout=30, what="the download")
            async with http.delete(f"/api/backtests/{stuck}") as resp:
                assert resp.status == 200
            assert (await call_json(http, "GET", f"/api/backtests/{stuck}"))[0] == 404
            ts.download_gate.set()
            ts.download_gate = None

            async with http.post(
                "/api/backtests",
                json={"model_id": 7, "from": (start + timedelta(minutes=1)).isoformat()},
            ) as resp:
                assert resp.status == 202, await resp.text()
                created = await resp.json()
                assert resp.headers["Location"] == f"/api/backtests/{created['id']}"
            assert created["status"] == "queued"
            result = await wait_for(
                lambda: _finished(http, created["id"]), timeout=240, what="the backtest finished"
            )
            assert result["status"] == "done", result
            summary = result["summary"]
            # 3 coins x 48 rows from start + 1 minute (rows every 5 s from start).
            assert summary["ticks"] == 3 * 48
            assert summary["coins"] == 3
            assert result["progress"]["fraction"] == 1.0
            assert len(summary["thresholds"]) == 10

            status, page = await call_json(
                http, "GET", f"/api/backtests/{created['id']}/ticks?limit=100&offset=100"
            )
            assert status == 200
            assert page["total"] == summary["ticks"]
            assert len(page["items"]) == summary["ticks"] - 100
            first = page["items"][0]
            assert set(first) == {
                "mint",
                "timestamp",
                "probability",
                "prediction",
                "tag",
                "outcome",
                "actual_change_pct",
                "max_gain_pct",
                "max_drawdown_pct",
            }
            status, alerts = await call_json(
                http, "GET", f"/api/backtests/{created['id']}/ticks?tag=alert&limit=1000"
            )
            assert alerts["total"] == summary["alerts"]
            assert {t["tag"] for t in alerts["items"]} <= {"alert"}

            async with http.delete(f"/api/backtests/{created['id']}") as resp:
                assert resp.status == 200
            assert (await call_json(http, "GET", f"/api/backtests/{created['id']}/ticks"))[0] == 404
    # Not imported by a backtest: no model row.
    conn = await connect(db_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM active_models") == 0
    finally:
        await conn.close()
