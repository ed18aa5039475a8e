"""Opt-in batched delivery (WEBHOOK_BATCH_MAX_TICKS > 1): several coin ticks per POST.

What an n8n that splits the array sees: each tick's body (CONTRACTS.md section 4)
exactly once among the 2xx-answered POSTs, in an array; a failed batch comes back
with the same ticks and the same Idempotency-Key, even from a dispatcher that does
not batch (the batch was fixed when it was first claimed). A real receiver on
127.0.0.1 and a real PostgreSQL; jobs are made as predictors make them.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import asyncpg
from waiting import wait_for
from webhook_receiver import (
    Answer,
    WebhookReceiver,
    insert_active_model,
    quick_dispatcher,
    store_predictions,
)

from actors.webhooks.dispatcher import WebhookDispatcher

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


async def _jobs(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT id, status, attempts FROM webhook_outbox ORDER BY id")


async def _all_delivered(pool: asyncpg.Pool) -> bool:
    jobs = await _jobs(pool)
    return bool(jobs) and all(j["status"] == "delivered" for j in jobs)


async def _run_until(dispatcher: WebhookDispatcher, done: Any, what: str) -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(dispatcher.run)
        await wait_for(done, what=what)
        dispatcher.request_stop()


def _tick(body: dict[str, Any]) -> tuple[str, str]:
    return body["coin_id"], body["timestamp"]


async def test_batched_posts_carry_each_tick_once_as_an_array_of_contract_bodies(
    pool: asyncpg.Pool, receiver: WebhookReceiver
) -> None:
    url = receiver.url("/hook")
    ticks = [(f"Coin{c}", T0 + timedelta(seconds=s), 0.9) for c in range(5) for s in (0, 1)]
    async with pool.acquire() as conn:
        models = [await insert_active_model(conn, 60 + i, n8n_webhook_url=url) for i in range(2)]
        for model in models:
            await store_predictions(conn, model, ticks, default_url=None)
    dispatcher = quick_dispatcher(pool, batch_max_ticks=4)
    await _run_until(dispatcher, lambda: _all_delivered(pool), "every job delivered")

    posts = receiver.received()
    assert all(isinstance(p.body, list) for p in posts)
    assert all(1 <= len(p.body) <= 4 for p in posts)
    assert len(posts) < len(ticks)  # fewer POSTs than coin ticks
    elements = [element for p in posts for element in p.body]
    # Every tick exactly once, each element a whole section-4 body with every model.
    assert Counter(_tick(e) for e in elements) == Counter(
        (coin, at.isoformat()) for coin, at, _ in ticks
    )
    for element in elements:
        assert set(element) == {"coin_id", "timestamp", "predictions", "metadata"}
        assert sorted(i["model"]["active_model_id"] for i in element["predictions"]) == models
        assert element["metadata"]["total_predictions"] == 2
        assert element["metadata"]["service"] == "pump-predictor"
    # A batch's elements are in tick order, and each POST has a key of its own.
    for p in posts:
        assert [(e["timestamp"], e["coin_id"]) for e in p.body] == sorted(
            (e["timestamp"], e["coin_id"]) for e in p.body
        )
    assert len({p.headers["Idempotency-Key"] for p in posts}) == len(posts)
    # Each job was sent, and recorded as sent, once.
    assert {(j["status"], j["attempts"]) for j in await _jobs(pool)} == {("delivered", 1)}
    outcomes = await pool.fetch(
        "SELECT outbox_id, outcome FROM webhook_attempts ORDER BY outbox_id, attempt"
    )
    assert [r["outcome"] for r in outcomes] == ["delivered"] * len(await _jobs(pool))


async def test_a_failed_batch_is_retried_whole_with_the_same_key_even_without_batching(
    pool: asyncpg.Pool, receiver: WebhookReceiver
) -> None:
    receiver.script("/hook", [Answer(503)])
    url = receiver.url("/hook")
    ticks = [(f"Coin{c}", T0, 0.9) for c in range(3)]
    async with pool.acquire() as conn:
        model = await insert_active_model(conn, 61, n8n_webhook_url=url)
        await store_predictions(conn, model, ticks, default_url=None)

    async def first_attempt_settled() -> bool:
        return all(j["attempts"] == 1 for j in await _jobs(pool))

    # A long back-off: the retry falls to the second dispatcher.
    batching = quick_dispatcher(pool, batch_max_ticks=5, backoff_base=0.5, backoff_max=0.5)
    await _run_until(batching, first_attempt_settled, "the first attempt settled")
    # The operator turns batching off; the batch already tried still goes out whole.
    plain = quick_dispatcher(pool, batch_max_ticks=1)
    await _run_until(plain, lambda: _all_delivered(pool), "the batch delivered on retry")

    failed, retried = receiver.received()
    assert (failed.status, retried.status) == (503, 200)
    assert failed.headers["Idempotency-Key"] == retried.headers["Idempotency-Key"]
    assert [failed.headers["X-Pump-Attempt"], retried.headers["X-Pump-Attempt"]] == ["1", "2"]
    # The same body but for when it was sent.
    for element in (*failed.body, *retried.body):
        element["metadata"].pop("sent_at")
    assert failed.body == retried.body
    assert sorted(_tick(e) for e in retried.body) == [(c, T0.isoformat()) for c, _, _ in ticks]
    assert {(j["status"], j["attempts"]) for j in await _jobs(pool)} == {("delivered", 2)}


async def test_the_default_stays_one_post_per_coin_tick_with_an_object_body(
    pool: asyncpg.Pool, receiver: WebhookReceiver
) -> None:
    ticks = [(f"Coin{c}", T0, 0.9) for c in range(3)]
    async with pool.acquire() as conn:
        model = await insert_active_model(conn, 62, n8n_webhook_url=receiver.url("/hook"))
        await store_predictions(conn, model, ticks, default_url=None)
    await _run_until(quick_dispatcher(pool), lambda: _all_delivered(pool), "delivered")
    posts = receiver.received()
    assert len(posts) == 3
    assert all(isinstance(p.body, dict) for p in posts)
    assert (
        await pool.fetchval("SELECT count(*) FROM webhook_outbox WHERE batch_key IS NOT NULL") == 0
    )
