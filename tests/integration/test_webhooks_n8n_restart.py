"""The dispatcher against a receiver that behaves like a real n8n restarting (issue #25).

While n8n starts its port first refuses connections, then answers Express's HTML
404, then n8n's JSON "not registered" 404 until the workflow is active again. No
job may be lost across that; a URL that answers 404 for ever parks its jobs
(waiting, not dead) and says so once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import anyio
import asyncpg
from structlog.testing import capture_logs
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

STARTING_HTML = (
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Error</title>\n'
    "</head>\n<body>\n<pre>Cannot POST /webhook/pump-alerts</pre>\n</body>\n</html>\n"
)
NOT_REGISTERED = (
    '{"code":404,"message":"The requested webhook \\"POST pump-alerts\\" is not registered.",'
    '"hint":"The workflow must be active for a production URL to run successfully."}'
)
HTML_404 = Answer(404, body=STARTING_HTML, content_type="text/html")
JSON_404 = Answer(404, body=NOT_REGISTERED)
PATH = "/webhook/pump-alerts"


@asynccontextmanager
async def running(dispatcher: WebhookDispatcher) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tg:
        await tg.start(dispatcher.run)
        try:
            yield
        finally:
            dispatcher.request_stop()


async def _statuses(pool: asyncpg.Pool) -> list[str]:
    return [r["status"] for r in await pool.fetch("SELECT status FROM webhook_outbox ORDER BY id")]


async def _jobs_for(pool: asyncpg.Pool, receiver: WebhookReceiver, coins: int) -> int:
    async with pool.acquire() as conn:
        model = await insert_active_model(conn, 41, n8n_webhook_url=receiver.url(PATH))
        ticks = [(f"Coin{i}", T0 + timedelta(seconds=i), 0.9) for i in range(coins)]
        await store_predictions(conn, model, ticks, default_url=None)
    return model


async def test_a_restarting_n8n_loses_no_job(pool: asyncpg.Pool) -> None:
    receiver = WebhookReceiver()
    await receiver.start()
    await receiver.stop()  # n8n is down: its port refuses connections
    try:
        await _jobs_for(pool, receiver, coins=6)
        dispatcher = quick_dispatcher(pool, max_attempts=30, not_found_grace=30.0)
        async with running(dispatcher):

            async def every_job_failed_once() -> bool:
                refused = await pool.fetchval(
                    "SELECT count(DISTINCT outbox_id) FROM webhook_attempts"
                    " WHERE status_code IS NULL"
                )
                return int(refused) == 6

            await wait_for(every_job_failed_once, what="connections refused for every job")
            # n8n comes up: Express's HTML 404, then "not registered", then the workflow runs.
            receiver.script(PATH, [HTML_404] * 4 + [JSON_404] * 4)
            await receiver.start()

            async def all_delivered() -> bool:
                return set(await _statuses(pool)) == {"delivered"}

            await wait_for(all_delivered, timeout=20.0, what="every job delivered")
        answers = [r.status for r in receiver.received()]
        assert answers.count(404) == 8 and answers.count(200) == 6
        delivered = [r.body["coin_id"] for r in receiver.received() if r.status == 200]
        assert sorted(delivered) == [f"Coin{i}" for i in range(6)]  # each exactly once
        outcomes = await pool.fetch("SELECT DISTINCT outcome FROM webhook_attempts")
        assert {r["outcome"] for r in outcomes} == {"retry", "delivered"}
        # The streak ended with the first success: the URL is not remembered as failing.
        assert await pool.fetchval("SELECT count(*) FROM webhook_endpoints") == 0
    finally:
        await receiver.stop()


async def test_a_url_that_answers_404_for_ever_parks_its_jobs_until_it_answers_again(
    pool: asyncpg.Pool,
) -> None:
    receiver = await WebhookReceiver(default=JSON_404).start()
    try:
        await _jobs_for(pool, receiver, coins=4)
        with capture_logs() as logs:
            dispatcher = quick_dispatcher(pool, max_attempts=3, not_found_grace=0.5)
            await _park_then_recover(pool, receiver, dispatcher)
        # One warning for the URL, not one per job; and one when it answered again.
        missing = [e for e in logs if e["event"] == "webhook_endpoint_missing"]
        assert [e["url"] for e in missing] == [receiver.url(PATH)]
        assert [e["released_jobs"] for e in logs if e["event"] == "webhook_endpoint_recovered"] == [
            4
        ]
        delivered = sorted(r.body["coin_id"] for r in receiver.received() if r.status == 200)
        assert delivered == ["Coin0", "Coin1", "Coin2", "Coin3", "Late"]
        assert await pool.fetchval("SELECT count(*) FROM webhook_endpoints") == 0
    finally:
        await receiver.stop()


async def _park_then_recover(
    pool: asyncpg.Pool, receiver: WebhookReceiver, dispatcher: WebhookDispatcher
) -> None:
    """Jobs park on a URL that answers n8n's 404 past the grace; then it answers 200."""
    async with running(dispatcher):

        async def all_waiting() -> bool:
            return await _statuses(pool) == ["waiting"] * 4

        await wait_for(all_waiting, what="every job waiting for its endpoint")
        endpoint = await pool.fetchrow("SELECT * FROM webhook_endpoints")
        assert endpoint["target_url"] == receiver.url(PATH)
        assert endpoint["missing_since"] is not None
        assert endpoint["last_status_code"] == 404
        # The 404s within the grace were retried; none of them killed a job.
        assert "dead" not in await _statuses(pool)
        posts = len(receiver.received())
        # Waiting jobs are not tried again by themselves.
        await dispatcher_idle(pool)
        assert len(receiver.received()) == posts

        # The workflow is activated again: a new job gets through, and the parked
        # ones are released and delivered with it.
        receiver.default = Answer(200)
        async with pool.acquire() as conn:
            model = await conn.fetchval("SELECT id FROM active_models")
            await store_predictions(conn, model, [("Late", T0, 0.9)], default_url=None)
        dispatcher.poke()

        async def all_delivered() -> bool:
            return await _statuses(pool) == ["delivered"] * 5

        await wait_for(all_delivered, what="parked jobs released and delivered")


async def dispatcher_idle(pool: asyncpg.Pool) -> None:
    """Until no job is leased (nothing in flight), so a silence means something."""

    async def idle() -> bool:
        leased = await pool.fetchval(
            "SELECT count(*) FROM webhook_outbox WHERE locked_until > now()"
        )
        return int(leased) == 0

    await wait_for(idle, what="no job in flight")


async def test_waiting_jobs_follow_a_changed_global_url_after_a_restart(
    pool: asyncpg.Pool, receiver: WebhookReceiver
) -> None:
    """Jobs of models without their own URL waited on the old N8N_WEBHOOK_URL; the
    service restarts with a new one: they move there and are delivered."""
    old = receiver.url("/old-workflow")
    async with pool.acquire() as conn:
        model = await insert_active_model(conn, 41)  # no URL of its own: the global one
        await store_predictions(conn, model, [("CoinA", T0, 0.9)], default_url=old)
        other = await insert_active_model(conn, 42, n8n_webhook_url=old)  # its own URL
        await store_predictions(conn, other, [("CoinB", T0, 0.9)], default_url=old)
        await conn.execute("UPDATE webhook_outbox SET status = 'waiting'")
    dispatcher = quick_dispatcher(pool, configured_url=receiver.url("/new-workflow"))
    async with running(dispatcher):

        async def moved_and_delivered() -> bool:
            rows = await pool.fetch("SELECT coin_id, status FROM webhook_outbox ORDER BY id")
            return [(r["coin_id"], r["status"]) for r in rows] == [
                ("CoinA", "delivered"),
                ("CoinB", "waiting"),  # its model still points to the old URL
            ]

        await wait_for(moved_and_delivered, what="the global model's job moved and delivered")
    assert [(r.path, r.body["coin_id"]) for r in receiver.received()] == [
        ("/new-workflow", "CoinA")
    ]


async def test_a_streak_another_dispatcher_recorded_is_ended_by_this_ones_next_success(
    pool: asyncpg.Pool,
) -> None:
    """A success deletes a URL's streak at most once a second while this dispatcher saw
    no failure (issue 23): a streak written meanwhile by another worker's dispatcher is
    still ended by this one's later successes."""
    receiver = await WebhookReceiver().start()
    try:
        model = await _jobs_for(pool, receiver, coins=2)
        dispatcher = quick_dispatcher(pool)
        async with running(dispatcher):

            async def all_delivered() -> bool:
                return set(await _statuses(pool)) == {"delivered"}

            await wait_for(all_delivered, what="the first jobs delivered")
            # Another dispatcher saw this URL fail a moment ago.
            await pool.execute(
                "INSERT INTO webhook_endpoints (target_url, failing_since, last_status_code)"
                " VALUES ($1, now(), 503)",
                receiver.url(PATH),
            )
            sent = iter(range(1, 1000))

            async def streak_ended() -> bool:
                # New work keeps arriving, as it does in the service.
                async with pool.acquire() as conn:
                    tick = [(f"Later{next(sent)}", T0, 0.9)]
                    await store_predictions(conn, model, tick, default_url=None)
                dispatcher.poke()
                return await pool.fetchval("SELECT count(*) FROM webhook_endpoints") == 0

            await wait_for(streak_ended, interval=0.2, what="the other dispatcher's streak ended")
    finally:
        await receiver.stop()
