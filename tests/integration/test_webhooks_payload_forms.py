"""N8N_PAYLOAD=full|compact, globally and per model (issue #25): what n8n receives."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import aiohttp
import anyio
import asyncpg
from service_runner import running_service
from waiting import wait_for
from webhook_receiver import (
    WebhookReceiver,
    insert_active_model,
    quick_dispatcher,
    store_predictions,
)

from storage.config import Settings
from storage.db.pool import connect

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
FEATURES = [f"feature_{i:02d}_with_a_long_descriptive_name" for i in range(80)]
COMPACT_KEYS = {
    "id",
    "active_model_id",
    "name",
    "model_type",
    "target_variable",
    "target_operator",
    "target_value",
    "future_minutes",
    "price_change_percent",
    "target_direction",
}


async def test_compact_models_drop_the_feature_list_and_a_models_own_choice_wins(
    pool: asyncpg.Pool, receiver: WebhookReceiver
) -> None:
    async with pool.acquire() as conn:
        models = {}
        for path, model_id, form in (
            ("/own-compact", 41, "compact"),
            ("/own-full", 42, "full"),
            ("/global", 43, None),
        ):
            models[path] = await insert_active_model(
                conn,
                model_id,
                n8n_webhook_url=receiver.url(path),
                n8n_payload=form,
                features=FEATURES,
                target_operator=">",
                target_value=10.0,
            )
            await store_predictions(conn, models[path], [("CoinA", T0, 0.9)], default_url=None)
    dispatcher = quick_dispatcher(pool, payload="compact")
    async with anyio.create_task_group() as tg:
        await tg.start(dispatcher.run)
        await wait_for(lambda: _delivered(pool, 3), what="three deliveries")
        dispatcher.request_stop()
    by_path = {r.path: r.body["predictions"][0]["model"] for r in receiver.received()}
    assert set(by_path["/own-compact"]) == COMPACT_KEYS
    assert set(by_path["/global"]) == COMPACT_KEYS  # the global form (compact here)
    assert by_path["/own-full"]["features"] == FEATURES  # the model chose full
    compact = by_path["/own-compact"]
    assert (compact["id"], compact["name"], compact["target_value"]) == (41, "model-41", 10.0)
    assert compact["active_model_id"] == models["/own-compact"]
    sizes = {path: len(json.dumps(model)) for path, model in by_path.items()}
    assert sizes["/own-compact"] * 5 < sizes["/own-full"]


async def _delivered(pool: asyncpg.Pool, count: int) -> bool:
    done = await pool.fetchval("SELECT count(*) FROM webhook_outbox WHERE status = 'delivered'")
    return int(done) == count


async def test_the_payload_form_is_set_per_model_through_the_api(settings: Settings) -> None:
    conn = await connect(settings.db_dsn)
    try:
        model = await insert_active_model(conn, 41, is_active=False)
    finally:
        await conn.close()
    async with running_service(settings) as service, aiohttp.ClientSession() as http:
        config = f"http://127.0.0.1:{service.web_port}/api/models/{model}/alert-config"
        async with http.get(config) as response:
            body = await response.json()
        assert (body["n8n_payload"], body["effective_n8n_payload"]) == (None, "full")
        async with http.patch(config, json={"n8n_payload": "tiny"}) as response:
            assert response.status == 422
            assert (await response.json())["error"]["details"]["field"] == "n8n_payload"
        async with http.patch(config, json={"n8n_payload": "compact"}) as response:
            body = await response.json()
        assert (body["n8n_payload"], body["effective_n8n_payload"]) == ("compact", "compact")
        async with http.patch(config, json={"n8n_payload": None}) as response:
            assert (await response.json())["effective_n8n_payload"] == "full"
