"""The dispatcher against a real receiver on 127.0.0.1 and a real PostgreSQL.

Jobs are made the way predictors make them: predictions and `webhook_jobs` +
`outbox.enqueue` in one transaction (see webhook_receiver.store_predictions).
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import asyncpg
from waiting import wait_for
from webhook_receiver import (
    Answer,
    WebhookReceiver,
    insert_active_model,
    load_webhook_model,
    quick_dispatcher,
    running,
    store_predictions,
)

from actors.runtime import metrics
from actors.webhooks.dispatcher import WebhookDispatcher
from actors.webhooks.payload import ReportedPrediction, build_payload, webhook_jobs
from storage.db.pool import create_pool
from storage.outbox import jobs as outbox
from storage.outbox.attempts import attempts_for_job
from storage.version import VERSION

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _counter(metric: Any, labels: dict[str, str] | None = None) -> float:
    try:
        return float(metric.get(labels or {}))
    except KeyError:
        return 0.0


async def _statuses(pool: asyncpg.Pool) -> dict[int, str]:
    rows = await pool.fetch("SELECT id, status FROM webhook_outbox ORDER BY id")
    return {r["id"]: r["status"] for r in rows}


async def _all_settled(pool: asyncpg.Pool) -> bool:
    statuses = await _statuses(pool)
    return bool(statuses) and "pending" not in statuses.values()


async def test_each_send_mode_delivers_exactly_the_predictions_it_should(
    pool: asyncpg.Pool, receiver: WebhookReceiver
) -> None:
    modes = {
        "all": ["all"],
        "alerts": ["alerts_only"],
        "positive": ["positive_only"],
        "negative": ["negative_only"],
        "positive-or-alert": ["positive_only", "alerts_only"],
        "negative-or-alert": ["negative_only", "alerts_only"],
    }
    # CoinN p=0.2 negative, CoinP p=0.6 positive, CoinA p=0.9 alert (threshold 0.7).
    ticks = [("CoinN", T0, 0.2), ("CoinP", T0, 0.6), ("CoinA", T0, 0.9)]
    async with pool.acquire() as conn:
        for i, (path, send_modes) in enumerate(modes.items()):
            model = await insert_active_model(
                conn, 100 + i, n8n_webhook_url=receiver.url(f"/{path}"), n8n_send_modes=send_modes
            )
            await store_predictions(conn, model, ticks, default_url=receiver.url("/global"))
        disabled = await insert_active_model(conn, 200, n8n_enabled=False)
        await store_predictions(conn, disabled, ticks, default_url=receiver.url("/global"))
        no_url = await insert_active_model(conn, 201)
        await store_predictions(conn, no_url, ticks, default_url=None)
        uses_global = await insert_active_model(conn, 202, n8n_send_modes=["alerts_only"])
        await store_predictions(conn, uses_global, ticks, default_url=receiver.url("/global"))
    async with running(quick_dispatcher(pool)):
        await wait_for(lambda: _all_settled(pool), what="every job delivered")
    got = {
        (r.path, p["tag"], r.body["coin_id"])
        for r in receiver.received()
        for p in r.body["predictions"]
    }
    assert got == {
        ("/all", "negative", "CoinN"),
        ("/all", "positive", "CoinP"),
        ("/all", "alert", "CoinA"),
        ("/alerts", "alert", "CoinA"),
        ("/positive", "positive", "CoinP"),
        ("/negative", "negative", "CoinN"),
        ("/positive-or-alert", "positive", "CoinP"),
        ("/positive-or-alert", "alert", "CoinA"),
        ("/negative-or-alert", "negative", "CoinN"),
        ("/negative-or-alert", "alert", "CoinA"),
        ("/global", "alert", "CoinA"),
    }
    assert len(receiver.received()) == len(got)  # one POST per URL and coin, no duplicates
    assert set((await _statuses(pool)).values()) == {"delivered"}


async def test_delivered_request_carries_the_contract_payload_and_headers(
    pool: asyncpg.Pool, receiver: WebhookReceiver
) -> None:
    async with pool.acquire() as conn:
        model_pk = await insert_active_model(
            conn,
            41,
            custom_name="Pump hunter",
            alert_threshold=0.8,
            n8n_webhook_url=receiver.url("/hook"),
        )
        await store_predictions(conn, model_pk, [("CoinA", T0, 0.85)], default_url=None)
        model = await load_webhook_model(conn, model_pk)
        key = await conn.fetchval("SELECT idempotency_key FROM webhook_outbox")
    async with running(quick_dispatcher(pool)):
        await wait_for(lambda: _all_settled(pool), what="delivery")
    [request] = receiver.received()
    expected = build_payload(
        "CoinA", T0, [(model, ReportedPrediction("CoinA", T0, 1, 0.85, "alert", 0.8))]
    )
    # Delivery metadata (issue #25): when this body was sent, which attempt, first attempt.
    sent_at = datetime.fromisoformat(request.body["metadata"].pop("sent_at"))
    assert abs((datetime.now(UTC) - sent_at).total_seconds()) < 60
    assert request.headers["X-Pump-Attempt"] == "1"
    assert datetime.fromisoformat(request.headers["X-Pump-First-Attempt-At"]) == sent_at
    assert request.body == expected
    assert request.body["predictions"][0]["model"]["name"] == "Pump hunter"
    assert request.body["predictions"][0]["model"]["id"] == 41
    assert request.body["predictions"][0]["model"]["active_model_id"] == model_pk
    assert request.body["timestamp"] == "2026-01-01T12:00:00+00:00"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == key


def _contract_item(
    active_model_id: int, model_id: int, features: list[str], probability: float
) -> dict[str, Any]:
    """A prediction item written out from CONTRACTS.md section 4 and the rows the test made
    (insert_active_model defaults, threshold 0.7), not by the code under test."""
    tag = "alert" if probability >= 0.7 else "positive" if probability >= 0.5 else "negative"
    return {
        "prediction": int(probability >= 0.5),
        "probability": probability,
        "is_alert": tag == "alert",
        "alert_threshold": 0.7,
        "tag": tag,
        "model": {
            "id": model_id,
            "active_model_id": active_model_id,
            "name": f"model-{model_id}",
            "model_type": "xgboost",
            "target_variable": "price_close",
            "target_operator": None,
            "target_value": None,
            "future_minutes": 5,
            "price_change_percent": 10.0,
            "target_direction": "up",
            "features": features,
            "phases": [1, 2],
        },
    }


async def test_models_sharing_a_url_get_one_post_per_coin(
    pool: asyncpg.Pool, receiver: WebhookReceiver
) -> None:
    url = receiver.url("/shared")
    many_features = [f"feature_{i}" for i in range(40)]
    async with pool.acquire() as conn:
        first = await insert_active_model(conn, 41, n8n_webhook_url=url, features=many_features)
        second = await insert_active_model(conn, 42, n8n_webhook_url=url)
        # Each predictor commits its own transaction, as in the service.
        await store_predictions(conn, second, [("CoinA", T0, 0.95)], default_url=None)
        await store_predictions(conn, first, [("CoinA", T0, 0.3)], default_url=None)
        await store_predictions(conn, first, [("CoinB", T0, 0.9)], default_url=None)
        keys = {
            r["coin_id"] + str(r["active_model_ids"][0]): r["idempotency_key"]
            for r in await conn.fetch("SELECT * FROM webhook_outbox")
        }
    async with running(quick_dispatcher(pool)):
        await wait_for(lambda: _all_settled(pool), what="delivery")
    by_coin = {r.body["coin_id"]: r for r in receiver.received()}
    assert len(receiver.received()) == 2
    coin_a = by_coin["CoinA"]
    assert [p["model"]["active_model_id"] for p in coin_a.body["predictions"]] == [first, second]
    # The merged body is the contract payload, field by field, through the jsonb outbox.
    assert coin_a.body == {
        "coin_id": "CoinA",
        "timestamp": "2026-01-01T12:00:00+00:00",
        "predictions": [
            _contract_item(first, 41, many_features, 0.3),
            _contract_item(second, 42, ["price_close", "volume_sol"], 0.95),
        ],
        "metadata": {
            "total_predictions": 2,
            "alerts_count": 1,
            "service": "pump-predictor",
            "version": coin_a.body["metadata"]["version"],
            "sent_at": coin_a.body["metadata"]["sent_at"],
        },
    }
    assert coin_a.body["metadata"]["version"] == VERSION
    assert by_coin["CoinB"].body["predictions"] == [_contract_item(first, 41, many_features, 0.9)]
    assert by_coin["CoinB"].body["metadata"]["total_predictions"] == 1
    merged_key = hashlib.sha256(
        "|".join(sorted([keys[f"CoinA{first}"], keys[f"CoinA{second}"]])).encode()
    ).hexdigest()
    assert coin_a.headers["Idempotency-Key"] == merged_key
    assert by_coin["CoinB"].headers["Idempotency-Key"] == keys[f"CoinB{first}"]
    # Every job of the combined POST has its own attempt row with its model ids.
    attempts = await pool.fetch(
        "SELECT active_model_ids, outcome FROM webhook_attempts ORDER BY id"
    )
    assert sorted(tuple(a["active_model_ids"]) for a in attempts) == sorted(
        [(first,), (second,), (first,)]
    )
    assert {a["outcome"] for a in attempts} == {"delivered"}


async def test_whole_tick_jobs_are_claimed_at_once_and_manual_ones_wait_for_their_tick(
    pool: asyncpg.Pool, receiver: WebhookReceiver
) -> None:
    """The batcher's jobs hold every model of their tick: its poke claims them at once.
    A manual prediction commits model by model: its pokes wait a short window, so the
    tick's models still share one POST."""
    url = receiver.url("/hook")
    async with pool.acquire() as conn:
        first = await insert_active_model(conn, 41, n8n_webhook_url=url)
        second = await insert_active_model(conn, 42, n8n_webhook_url=url)

    def claimed_once(dispatcher: WebhookDispatcher) -> bool:
        return dispatcher.claims >= 1  # its first look at the empty outbox is over

    # A window far longer than the wait below: only a poke that skips it gets through.
    dispatcher = quick_dispatcher(pool, poll_interval=120.0, coalesce_window=60.0)
    async with running(dispatcher):
        await wait_for(lambda: claimed_once(dispatcher), what="the first claim")
        async with pool.acquire() as conn:
            await store_predictions(conn, first, [("CoinA", T0, 0.9)], default_url=None)
        dispatcher.poke(whole_ticks=True)
        await wait_for(lambda: _all_settled(pool), what="the whole tick's job", timeout=10.0)

    dispatcher = quick_dispatcher(pool, poll_interval=120.0, coalesce_window=1.0)
    async with running(dispatcher):
        await wait_for(lambda: claimed_once(dispatcher), what="the first claim")
        async with pool.acquire() as conn:
            for model in (first, second):
                await store_predictions(conn, model, [("CoinB", T0, 0.9)], default_url=None)
                dispatcher.poke()
        await wait_for(lambda: _all_settled(pool), what="the manual tick's jobs")
    posts = {r.body["coin_id"]: r.body for r in receiver.received()}
    assert len(receiver.received()) == 2
    assert [p["model"]["active_model_id"] for p in posts["CoinB"]["predictions"]] == [
        first,
        second,
    ]


async def test_500_twice_then_200_is_delivered_on_the_third_attempt(
    pool: asyncpg.Pool, receiver: WebhookReceiver
) -> None:
    receiver.script("/hook", [Answer(500), Answer(503)])
    async with pool.acquire() as conn:
        model = await insert_active_model(conn, 41, n8n_webhook_url=receiver.url("/hook"))
        await store_predictions(conn, model, [("CoinA", T0, 0.9)], default_url=None)
    retried_before = _counter(metrics.WEBHOOK_RETRIED)
    async with running(quick_dispatcher(pool)):
        await wait_for(lambda: _all_settled(pool), what="delivery after retries")
    requests = receiver.received()
    assert [r.status for r in requests] == [500, 503, 200]
    assert len({r.headers["Idempotency-Key"] for r in requests}) == 1
    # The same body each time, but for when it was sent; each attempt says which it is
    # and when the first one was made.
    sent = [r.body["metadata"].pop("sent_at") for r in requests]
    assert sent == sorted(sent) and len(set(sent)) == 3
    assert requests[0].body == requests[2].body
    assert [r.headers["X-Pump-Attempt"] for r in requests] == ["1", "2", "3"]
    assert {r.headers["X-Pump-First-Attempt-At"] for r in requests} == {sent[0]}
    [job] = await pool.fetch("SELECT id, status, attempts, delivered_at FROM webhook_outbox")
    assert (job["status"], job["attempts"]) == ("delivered", 3)
    async with pool.acquire() as conn:
        attempts = await attempts_for_job(conn, job["id"])
    assert [(a.attempt, a.status_code, a.outcome) for a in attempts] == [
        (1, 500, "retry"),
        (2, 503, "retry"),
        (3, 200, "delivered"),
    ]
    assert all(a.active_model_ids == (model,) and a.model_ids == (41,) for a in attempts)
    assert all(a.latency_ms is not None and a.latency_ms >= 0 for a in attempts)
    assert _counter(metrics.WEBHOOK_RETRIED) - retried_before == 2


async def test_400_is_not_retried_and_the_job_is_dead(
    pool: asyncpg.Pool, receiver: WebhookReceiver
) -> None:
    receiver.script("/bad", [Answer(400)])
    async with pool.acquire() as conn:
        model = await insert_active_model(conn, 41, n8n_webhook_url=receiver.url("/bad"))
        await store_predictions(conn, model, [("CoinA", T0, 0.9)], default_url=None)
    dispatcher = quick_dispatcher(pool)
    async with running(dispatcher):
        await wait_for(lambda: _all_settled(pool), what="the job settles")
        # A later job to the same URL goes through, so the dispatcher kept running and
        # had every chance to retry the first one.
        async with pool.acquire() as conn:
            await store_predictions(conn, model, [("CoinB", T0, 0.9)], default_url=None)
        dispatcher.poke()
        await wait_for(lambda: _all_settled(pool), what="the second job")
    assert [(r.body["coin_id"], r.status) for r in receiver.received()] == [
        ("CoinA", 400),
        ("CoinB", 200),
    ]
    dead = await pool.fetchrow(
        "SELECT id, status, attempts, last_status_code, last_error FROM webhook_outbox"
        " WHERE coin_id = 'CoinA'"
    )
    assert (dead["status"], dead["attempts"], dead["last_status_code"]) == ("dead", 1, 400)
    assert "400" in dead["last_error"]
    async with pool.acquire() as conn:
        [attempt] = await attempts_for_job(conn, dead["id"])
    assert (attempt.outcome, attempt.status_code, attempt.active_model_ids) == (
        "failed",
        400,
        (model,),
    )


async def test_429_retry_after_is_honoured(pool: asyncpg.Pool, receiver: WebhookReceiver) -> None:
    receiver.script("/busy", [Answer(429, retry_after="1")])
    async with pool.acquire() as conn:
        model = await insert_active_model(conn, 41, n8n_webhook_url=receiver.url("/busy"))
        await store_predictions(conn, model, [("CoinA", T0, 0.9)], default_url=None)
    async with running(quick_dispatcher(pool)):  # backoff alone would retry after ~50 ms
        await wait_for(lambda: _all_settled(pool), what="delivery after 429")
    first, second = receiver.received()
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 0.95


async def test_retries_stop_at_max_attempts_and_the_job_is_dead(
    pool: asyncpg.Pool, receiver: WebhookReceiver
) -> None:
    receiver.default = Answer(502)
    async with pool.acquire() as conn:
        model = await insert_active_model(conn, 41, n8n_webhook_url=receiver.url("/down"))
        await store_predictions(conn, model, [("CoinA", T0, 0.9)], default_url=None)
    dead_before = _counter(metrics.WEBHOOK_DEAD)
    async with running(quick_dispatcher(pool, max_attempts=3)):
        await wait_for(lambda: _all_settled(pool), what="the job gives up")
    assert len(receiver.received()) == 3
    outcomes = await pool.fetch("SELECT outcome FROM webhook_attempts ORDER BY id")
    assert [o["outcome"] for o in outcomes] == ["retry", "retry", "dead"]
    assert (await pool.fetchval("SELECT status FROM webhook_outbox")) == "dead"
    assert _counter(metrics.WEBHOOK_DEAD) - dead_before == 1


async def test_a_slow_receiver_does_not_delay_other_urls_or_other_coins(
    pool: asyncpg.Pool, receiver: WebhookReceiver
) -> None:
    other = await WebhookReceiver().start()
    try:
        receiver.default = Answer(hold=True)
        async with pool.acquire() as conn:
            slow = await insert_active_model(conn, 41, n8n_webhook_url=receiver.url("/slow"))
            fast = await insert_active_model(conn, 42, n8n_webhook_url=other.url("/fast"))
            await store_predictions(
                conn, slow, [("CoinA", T0, 0.9), ("CoinB", T0, 0.9)], default_url=None
            )
            await store_predictions(conn, fast, [("CoinA", T0, 0.9)], default_url=None)
        async with running(quick_dispatcher(pool, timeout=10.0)):
            # Both coins of the slow URL are in flight at once, and the other model's
            # receiver already has its alert while the slow one still holds them.
            await wait_for(lambda: receiver.in_flight == 2, what="two held requests")
            await wait_for(lambda: len(other.received()) == 1, what="fast delivery")
            assert receiver.in_flight == 2
            receiver.release()
            await wait_for(lambda: _all_settled(pool), what="the slow ones finish")
        assert sorted(r.body["coin_id"] for r in receiver.received()) == ["CoinA", "CoinB"]
    finally:
        await other.stop()


async def test_a_saturated_host_does_not_hold_back_another_host(
    pool: asyncpg.Pool, receiver: WebhookReceiver
) -> None:
    other = await WebhookReceiver().start()
    try:
        receiver.default = Answer(hold=True)
        async with pool.acquire() as conn:
            slow = await insert_active_model(conn, 41, n8n_webhook_url=receiver.url("/slow"))
            fast = await insert_active_model(conn, 42, n8n_webhook_url=other.url("/fast"))
            coins = [(f"Coin{i}", T0, 0.9) for i in range(6)]
            await store_predictions(conn, slow, coins, default_url=None)
            await store_predictions(conn, fast, coins, default_url=None)
        async with running(quick_dispatcher(pool, per_host_limit=2, concurrency=4, timeout=10.0)):
            await wait_for(lambda: len(other.received()) == 6, what="fast host served")
            assert receiver.in_flight == 2  # the per-host limit holds
            slow_attempts = await pool.fetchval(
                "SELECT count(*) FROM webhook_attempts WHERE $1 = ANY(active_model_ids)", slow
            )
            assert slow_attempts == 0  # waiting jobs were not charged an attempt
            receiver.release()
            await wait_for(lambda: _all_settled(pool), what="slow host drained")
        assert len(receiver.received()) == 6
    finally:
        await other.stop()


async def test_two_dispatchers_on_one_database_never_send_a_job_twice(
    pool: asyncpg.Pool, db_dsn: str, receiver: WebhookReceiver
) -> None:
    receiver.default = Answer(delay=0.005)
    async with pool.acquire() as conn:
        models = [
            await insert_active_model(conn, 40 + i, n8n_webhook_url=receiver.url(f"/m{i}"))
            for i in range(3)
        ]
        for model in models:
            ticks = [
                (f"Coin{c}", T0 + timedelta(seconds=s), 0.9) for c in range(10) for s in (0, 1)
            ]
            await store_predictions(conn, model, ticks, default_url=None)
    second_pool = await create_pool(db_dsn, min_size=1, max_size=3)
    try:
        one = quick_dispatcher(pool, concurrency=4)
        two = quick_dispatcher(second_pool, concurrency=4)
        async with running(one, two):
            await wait_for(lambda: _all_settled(pool), what="all 60 jobs delivered")
    finally:
        await second_pool.close()
    assert one.delivered_jobs > 0 and two.delivered_jobs > 0  # both really competed
    assert one.delivered_jobs + two.delivered_jobs == 60
    keys = [r.headers["Idempotency-Key"] for r in receiver.received()]
    assert len(keys) == 60
    assert len(set(keys)) == 60
    assert await pool.fetchval("SELECT count(*) FROM webhook_attempts") == 60


async def test_jobs_of_a_crashed_dispatcher_come_back_after_its_lease(
    pool: asyncpg.Pool, receiver: WebhookReceiver
) -> None:
    async with pool.acquire() as conn:
        model = await insert_active_model(conn, 41, n8n_webhook_url=receiver.url("/hook"))
        await store_predictions(conn, model, [("CoinA", T0, 0.9)], default_url=None)
        # A dispatcher claims the job and dies before sending it.
        [claimed] = (await outbox.claim_due(conn, limit=10, lease_seconds=0.5)).jobs
    started = time.monotonic()
    async with running(quick_dispatcher(pool)):
        await wait_for(lambda: _all_settled(pool), what="delivery after the lease")
    [request] = receiver.received()
    assert request.at - started >= 0.3
    row = await pool.fetchrow(
        "SELECT status, attempts FROM webhook_outbox WHERE id = $1", claimed.id
    )
    assert (row["status"], row["attempts"]) == ("delivered", 1)


async def test_stop_lets_a_delivery_in_flight_finish(
    pool: asyncpg.Pool, receiver: WebhookReceiver
) -> None:
    receiver.default = Answer(hold=True)
    async with pool.acquire() as conn:
        model = await insert_active_model(conn, 41, n8n_webhook_url=receiver.url("/hook"))
        await store_predictions(conn, model, [("CoinA", T0, 0.9)], default_url=None)
    dispatcher = quick_dispatcher(pool)
    async with anyio.create_task_group() as tg:
        await tg.start(dispatcher.run)
        await wait_for(lambda: receiver.in_flight == 1, what="request in flight")
        dispatcher.request_stop()
        receiver.release()
    # run() returned only after the held delivery was answered and recorded.
    assert (await pool.fetchval("SELECT status FROM webhook_outbox")) == "delivered"


async def test_jobs_built_from_the_pure_builder_enqueue_once_per_tick(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        model_pk = await insert_active_model(conn, 41)
        model = await load_webhook_model(conn, model_pk)
        prediction = ReportedPrediction("CoinA", T0, 1, 0.9, "alert", 0.7)
        jobs = webhook_jobs(model, [prediction], default_url="http://127.0.0.1:9/h")
        async with conn.transaction():
            assert await outbox.enqueue(conn, jobs) == 1
        async with conn.transaction():
            assert await outbox.enqueue(conn, jobs + jobs) == 0


async def test_a_job_with_an_unusable_url_is_given_up_without_stopping_others(
    pool: asyncpg.Pool, receiver: WebhookReceiver
) -> None:
    async with pool.acquire() as conn:
        # Written straight into the database (the API would refuse it).
        broken = await insert_active_model(conn, 41, n8n_webhook_url="not-a-url")
        fine = await insert_active_model(conn, 42, n8n_webhook_url=receiver.url("/hook"))
        await store_predictions(conn, broken, [("CoinA", T0, 0.9)], default_url=None)
        await store_predictions(conn, fine, [("CoinA", T0, 0.9)], default_url=None)
    async with running(quick_dispatcher(pool)):
        await wait_for(lambda: _all_settled(pool), what="both jobs settled")
    rows = await pool.fetch(
        "SELECT o.status, a.outcome, a.error FROM webhook_outbox o"
        " JOIN webhook_attempts a ON a.outbox_id = o.id WHERE o.target_url = 'not-a-url'"
    )
    assert [(r["status"], r["outcome"]) for r in rows] == [("dead", "failed")]
    assert rows[0]["error"]
    assert len(receiver.received()) == 1


async def test_a_job_whose_model_snapshot_is_missing_is_given_up_with_a_clear_error(
    pool: asyncpg.Pool, receiver: WebhookReceiver
) -> None:
    """Jobs refer to their models' definitions (stored once); one whose definition is
    gone cannot be sent as the contract says, so it is dead, and the others go out."""
    async with pool.acquire() as conn:
        gone = await insert_active_model(conn, 41, n8n_webhook_url=receiver.url("/a"))
        kept = await insert_active_model(conn, 42, n8n_webhook_url=receiver.url("/b"))
        await store_predictions(conn, gone, [("CoinA", T0, 0.9)], default_url=None)
        await store_predictions(conn, kept, [("CoinA", T0, 0.9)], default_url=None)
        # The job refers to its item's tail, which holds the model's definition.
        model = await conn.fetchrow(
            "DELETE FROM webhook_model_snapshots"
            " WHERE (model_json::jsonb->'model'->>'active_model_id')::bigint = $1 RETURNING key",
            gone,
        )
        assert model is not None
    async with running(quick_dispatcher(pool)):
        await wait_for(lambda: _all_settled(pool), what="both jobs settled")
    rows = await pool.fetch(
        "SELECT o.status, a.outcome, a.error FROM webhook_outbox o"
        " JOIN webhook_attempts a ON a.outbox_id = o.id WHERE o.active_model_ids = $1",
        [gone],
    )
    assert [(r["status"], r["outcome"]) for r in rows] == [("dead", "dead")]
    assert f"model snapshot {model['key']} is missing" in rows[0]["error"]
    [received] = receiver.received()
    assert received.path == "/b"
    assert received.body["predictions"][0]["model"]["active_model_id"] == kept
