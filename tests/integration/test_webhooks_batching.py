"""The dispatcher's database work is per batch, not per POST, and stays exactly-once per tick.

A real receiver on 127.0.0.1 and a real PostgreSQL; jobs are made as predictors
make them (webhook_receiver.store_predictions).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

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

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


async def _all_delivered(pool: asyncpg.Pool) -> bool:
    statuses = await pool.fetch("SELECT status FROM webhook_outbox")
    return bool(statuses) and all(r["status"] == "delivered" for r in statuses)


async def test_many_ticks_to_one_host_arrive_once_each_with_few_claims_and_flushes(
    pool: asyncpg.Pool, receiver: WebhookReceiver
) -> None:
    receiver.default = Answer(delay=0.002)
    url = receiver.url("/hook")
    ticks = [(f"Coin{c}", T0 + timedelta(seconds=s), 0.9) for c in range(20) for s in (0, 1)]
    async with pool.acquire() as conn:
        models = [await insert_active_model(conn, 40 + i, n8n_webhook_url=url) for i in range(3)]
        for model in models:  # one commit per model, as the predictors do
            await store_predictions(conn, model, ticks, default_url=None)
    dispatcher = quick_dispatcher(pool, per_host_limit=2)
    async with anyio.create_task_group() as tg:
        await tg.start(dispatcher.run)
        await wait_for(lambda: _all_delivered(pool), what="all 120 jobs delivered")
        dispatcher.request_stop()
    posts = receiver.received()
    # Each coin tick arrived exactly once, carrying every model's prediction.
    per_tick = Counter((p.body["coin_id"], p.body["timestamp"]) for p in posts)
    assert len(per_tick) == len(ticks)
    assert set(per_tick.values()) == {1}
    assert all(
        sorted(i["model"]["active_model_id"] for i in p.body["predictions"]) == models
        for p in posts
    )
    assert len({p.headers["Idempotency-Key"] for p in posts}) == len(ticks)
    # Nothing was claimed only to be handed back, and the database saw batches:
    # a claim leases several POSTs' jobs, a flush settles several POSTs.
    assert dispatcher.released_jobs == 0
    assert dispatcher.claims <= len(posts) // 2
    assert dispatcher.settle_flushes < len(posts)
    attempts = await pool.fetch(
        "SELECT outcome, count(*) AS n FROM webhook_attempts GROUP BY outcome"
    )
    assert {r["outcome"]: r["n"] for r in attempts} == {"delivered": 3 * len(ticks)}


async def test_a_group_whose_lease_ran_low_while_queued_goes_back_unsent_and_is_sent_once(
    pool: asyncpg.Pool, receiver: WebhookReceiver
) -> None:
    receiver.default = Answer(hold=True)
    async with pool.acquire() as conn:
        model = await insert_active_model(conn, 41, n8n_webhook_url=receiver.url("/hook"))
        await store_predictions(
            conn, model, [("CoinA", T0, 0.9), ("CoinB", T0, 0.9)], default_url=None
        )
    # One slot for the host: CoinB waits in the local queue behind the held CoinA,
    # and a 2 s lease leaves it too little time (under 1 s) once CoinA is answered.
    dispatcher = quick_dispatcher(pool, per_host_limit=1, lease_seconds=2.0)

    async def queued_lease_is_low() -> bool:
        left = await pool.fetchval(
            "SELECT extract(epoch FROM locked_until - now()) FROM webhook_outbox"
            " WHERE coin_id = 'CoinB'"
        )
        return left is not None and left < 0.9

    async with anyio.create_task_group() as tg:
        await tg.start(dispatcher.run)
        await wait_for(lambda: receiver.in_flight == 1, what="CoinA held")
        await wait_for(queued_lease_is_low, what="CoinB's lease running low")
        receiver.release()
        await wait_for(lambda: _all_delivered(pool), what="both delivered")
        dispatcher.request_stop()
    assert sorted(r.body["coin_id"] for r in receiver.received()) == ["CoinA", "CoinB"]
    assert dispatcher.released_jobs == 1
    rows = await pool.fetch("SELECT coin_id, attempts FROM webhook_outbox ORDER BY coin_id")
    # The hand-back cost no attempt: each job was tried exactly once.
    assert [(r["coin_id"], r["attempts"]) for r in rows] == [("CoinA", 1), ("CoinB", 1)]
    assert await pool.fetchval("SELECT count(*) FROM webhook_attempts") == 2


async def test_posts_to_one_host_reuse_a_few_kept_alive_connections(
    pool: asyncpg.Pool, receiver: WebhookReceiver
) -> None:
    # An answer of a few kB (a workflow that responds with data) does not make the
    # dispatcher drop the connection, although it reads only the answer's first kB.
    receiver.default = Answer(body="x" * 4000, content_type="text/plain")
    ticks = [(f"Coin{c}", T0, 0.9) for c in range(30)]
    async with pool.acquire() as conn:
        model = await insert_active_model(conn, 45, n8n_webhook_url=receiver.url("/hook"))
        await store_predictions(conn, model, ticks, default_url=None)
    dispatcher = quick_dispatcher(pool, per_host_limit=2)
    async with anyio.create_task_group() as tg:
        await tg.start(dispatcher.run)
        await wait_for(lambda: _all_delivered(pool), what="all 30 jobs delivered")
        dispatcher.request_stop()
    posts = receiver.received()
    assert len(posts) == 30
    # Never more connections than deliveries in flight to the host: no TCP handshake
    # per POST.
    assert 1 <= len({p.peer for p in posts}) <= 2
