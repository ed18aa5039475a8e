"""A coin tick processed again with models it was not processed with before (the
poller re-reads the overlap behind the cursor at every start, so models activated
while the service was down predict the ticks of that window): their predictions are
stored, and their webhook items must reach n8n too. The tick's job exists already
(keyed per URL and coin tick), so they go in a follow-up job of their own."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from coin_rows import coin_rows, insert_rows
from intake_cursor import cursor_reached
from service_runner import predictors_running, running_service
from test_intake_total import FEATURES, predicted
from waiting import wait_for
from webhook_receiver import (
    WebhookReceiver,
    add_trained_models,
    insert_active_model,
    load_webhook_model,
)

from actors.webhooks.follow_ups import follow_up_key, queue_follow_ups
from actors.webhooks.payload import (
    ReportedPrediction,
    iso_timestamp,
    tick_jobs,
    tick_key,
    webhook_items,
)
from storage.config import Settings
from storage.db.pool import connect
from storage.outbox import jobs as outbox


async def test_models_activated_while_down_send_their_predictions_of_re_read_ticks(
    settings: Settings, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    settings = settings.replace(n8n_webhook_url=receiver.url())
    conn = await connect(settings.db_dsn)
    try:
        (tmp_path / "first").mkdir()
        (tmp_path / "later").mkdir()
        first = await add_trained_models(conn, tmp_path / "first", 1201, FEATURES)
        [row] = coin_rows("CoinR", 1, start=datetime.now(UTC), seed=3)
        tick = {"CoinR": row["timestamp"]}
        async with running_service(settings) as service:
            await wait_for(lambda: predictors_running(service) == 2, what="two models")
            [row_id] = await insert_rows(conn, [row])
            await wait_for(lambda: predicted(conn, tick, 2), what="the tick predicted")
            await wait_for(lambda: cursor_reached(conn, row_id), what="the cursor past it")
            await wait_for(lambda: len(receiver.received()) == 1, what="its POST")

        later = await add_trained_models(conn, tmp_path / "later", 1301, FEATURES)
        async with running_service(settings) as service:
            await wait_for(lambda: predicted(conn, tick, 4), what="the new models' predictions")

            async def settled() -> bool:
                pending = "SELECT count(*) FROM webhook_outbox WHERE status <> 'delivered'"
                return await conn.fetchval(pending) == 0

            await wait_for(settled, what="every job delivered")
    finally:
        await conn.close()
    sent = Counter(
        (r.body["coin_id"], p["model"]["active_model_id"])
        for r in receiver.received()
        for p in r.body["predictions"]
    )
    assert sent == Counter({("CoinR", m): 1 for m in [*first, *later]})
    keys = [r.headers["Idempotency-Key"] for r in receiver.received()]
    assert len(keys) == len(set(keys)) == 2


async def test_each_model_of_a_tick_is_queued_once_however_often_the_tick_comes_again(
    pool: asyncpg.Pool,
) -> None:
    url = "https://n8n.example/hook"
    at = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    async with pool.acquire() as conn:
        models = [
            await load_webhook_model(conn, await insert_active_model(conn, m)) for m in (1, 2, 3)
        ]

        async def store(*chosen: int) -> int:
            """One processing of the tick by these models, as the batcher queues it."""
            items = [
                item
                for k in chosen
                for item in webhook_items(
                    models[k],
                    [ReportedPrediction("CoinF", at, 1, 0.9, "alert", 0.8)],
                    default_url=url,
                )
            ]
            async with conn.transaction():
                queued = await outbox.enqueue(conn, tick_jobs(items))
                if queued < 1:
                    queued += await queue_follow_ups(conn, items)
            return queued

        assert await store(0) == 1
        assert await store(0, 1) == 1  # the follow-up of model 2
        assert await store(0, 1) == 0
        assert await store(1, 2) == 1  # the follow-up of model 3
        assert await store(0, 1, 2) == 0
        rows = await conn.fetch(
            "SELECT idempotency_key, active_model_ids FROM webhook_outbox ORDER BY id"
        )
    key = tick_key(url, "CoinF", iso_timestamp(at))
    ids = [m.active_model_id for m in models]
    assert [(r[0], r[1]) for r in rows] == [
        (key, [ids[0]]),
        (follow_up_key(key, 1), [ids[1]]),
        (follow_up_key(key, 2), [ids[2]]),
    ]
