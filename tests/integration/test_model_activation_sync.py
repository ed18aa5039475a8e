"""A model change answered by the API is already in effect in the pipeline.

Activate and import answer once the predictor runs, so a row committed right
after the answer is predicted by that model; a deactivated or deleted model's
predictor leaves /health's actors and the pp_actor_up series instead of
reading "down" for ever.
"""

from __future__ import annotations

from datetime import datetime

import aiohttp
import asyncpg
from coin_rows import coin_rows, insert_rows
from intake_cursor import cursor_reached
from metrics_reader import metrics_text
from model_factory import train_model
from service_runner import running_service
from training_service_stub import TrainingServiceStub
from waiting import wait_for

from storage.config import Settings
from storage.db.pool import connect

FEATURES = ["price_close", "volume_sol", "buy_pressure_ratio", "num_buys", "price_roc_5"]
REPETITIONS = 20


async def _predicted(conn: asyncpg.Connection, coin: str, at: datetime) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT count(*) FROM predictions WHERE coin_id = $1 AND data_timestamp = $2",
            coin,
            at,
        )
    )


async def _consumed(conn: asyncpg.Connection, coin: str) -> bool:
    newest = await conn.fetchval("SELECT max(id) FROM coin_metrics WHERE mint = $1", coin)
    return await cursor_reached(conn, newest)


async def _actor_series(http: aiohttp.ClientSession, name: str) -> tuple[bool, bool]:
    """(listed in /health's actors_down, has a pp_actor_up series)."""
    async with http.get("/health") as resp:
        down = (await resp.json())["checks"]["actors_down"]
    text = await metrics_text(http)
    return name in down, f'pp_actor_up{{actor="{name}"}}' in text


async def test_rows_committed_right_after_activate_or_import_are_predicted(
    settings: Settings, db_dsn: str
) -> None:
    async with TrainingServiceStub() as ts:
        # Big enough that loading it takes a while: the API must wait for it.
        big = train_model("random_forest", FEATURES, seed=3, n_estimators=300)
        ts.add_model(11, "random_forest", FEATURES, file=big)
        settings = settings.replace(
            training_service_api_url=ts.base_url,
            batch_timeout_seconds=0.005,
            feature_history_size=16,
        )
        conn = await connect(db_dsn)
        try:
            async with (
                running_service(settings) as service,
                aiohttp.ClientSession(f"http://127.0.0.1:{service.web_port}") as http,
            ):
                async with http.post("/api/models/import", json={"model_id": 11}) as resp:
                    assert resp.status == 201, await resp.text()
                    active_id = (await resp.json())["id"]
                # Imported: the very next rows are predicted.
                rows = coin_rows("imported", 12, seed=1)
                await insert_rows(conn, rows)
                await wait_for(lambda: _consumed(conn, "imported"), what="rows consumed")
                assert await _predicted(conn, "imported", rows[-1]["timestamp"])

                name = f"predictor-{active_id}"
                missed = []
                for i in range(REPETITIONS):
                    async with http.post(f"/api/models/{active_id}/deactivate") as resp:
                        assert resp.status == 200, await resp.text()
                    # Deactivated on purpose: not "down", and no pp_actor_up series.
                    assert await _actor_series(http, name) == (False, False)
                    async with http.post(f"/api/models/{active_id}/activate") as resp:
                        assert resp.status == 200, await resp.text()
                    coin = f"coin{i}"
                    rows = coin_rows(coin, 12, seed=i)
                    await insert_rows(conn, rows)
                    await wait_for(lambda c=coin: _consumed(conn, c), what=f"{coin} consumed")
                    if not await _predicted(conn, coin, rows[-1]["timestamp"]):
                        missed.append(coin)
                assert missed == [], f"{len(missed)} of {REPETITIONS} activations missed rows"

                async with http.delete(f"/api/models/{active_id}") as resp:
                    assert resp.status == 200, await resp.text()
                assert await _actor_series(http, name) == (False, False)
        finally:
            await conn.close()
