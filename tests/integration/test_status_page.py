"""The status page at / shows what an operator checks first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import aiohttp
import anyio
import asyncpg
from prediction_rows import add_prediction, set_outcome

from actors.app.service import Service
from storage.config import Settings


async def _add_model_with_outcomes(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        model_pk = await conn.fetchval(
            """
            INSERT INTO active_models (model_id, name, model_type, target_kind, future_minutes,
                price_change_percent, target_direction, features, file_path, file_sha256)
            VALUES (41, 'Pump hunter', 'xgboost', 'time_based', 5, 10, 'up', '["price_close"]',
                    '/nowhere.pkl', 'abc')
            RETURNING id
            """
        )
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        for i, result in enumerate(["success", "success", "failed", None]):
            pid = await add_prediction(
                conn, model_pk, "CoinA", t0 + timedelta(seconds=i), prediction=1, probability=0.9
            )
            if result is not None:  # up 12 % reached the 10 % target, up 1 % did not
                await set_outcome(conn, pid, result, change=12.0 if result == "success" else 1.0)
    finally:
        await conn.close()


async def test_status_page_shows_models_with_live_success_rate(settings: Settings) -> None:
    await _add_model_with_outcomes(settings.db_dsn)
    service = Service(settings)
    async with anyio.create_task_group() as tg:
        await tg.start(service.run)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{service.web_port}/") as resp:
                html = await resp.text()
                assert resp.status == 200
                assert resp.content_type == "text/html"
        await service.shutdown()
        tg.cancel_scope.cancel()
    assert "Pump hunter" in html
    assert "66.7 %" in html  # 2 of 3 evaluated came true; the pending one does not count
    assert "healthy" in html
    assert "64 of 64 held by 1 process(es) (this one: 64)" in html  # the coin shards
    assert "evaluator and retention run by this process" in html  # housekeeping's lease
