"""The durable outbox on a real PostgreSQL: enqueue with the predictions, claim, lease."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import asyncpg
from waiting import wait_for
from webhook_receiver import insert_active_model, store_predictions

from storage.outbox import jobs as outbox

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
URL = "http://127.0.0.1:9/hook"
MIGRATIONS = Path(__file__).resolve().parents[2] / "storage" / "db" / "migrations"


async def test_jobs_exist_exactly_when_their_predictions_commit(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        model = await insert_active_model(conn, 41)
        assert await store_predictions(conn, model, [("CoinA", T0, 0.9)], default_url=URL) == 1
        # Re-processing the same tick (overlap re-read, restart) adds nothing.
        assert await store_predictions(conn, model, [("CoinA", T0, 0.9)], default_url=URL) == 0

        class Abort(Exception):
            pass

        try:
            async with conn.transaction():
                await store_predictions(conn, model, [("CoinB", T0, 0.9)], default_url=URL)
                raise Abort
        except Abort:
            pass
        rows = await conn.fetch("SELECT coin_id, active_model_ids, model_ids FROM webhook_outbox")
        predictions = await conn.fetchval("SELECT count(*) FROM predictions")
    assert [(r["coin_id"], r["active_model_ids"], r["model_ids"]) for r in rows] == [
        ("CoinA", [model], [41])
    ]
    assert predictions == 1


async def test_concurrent_claims_never_hand_out_the_same_job(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        model = await insert_active_model(conn, 41)
        ticks = [(f"Coin{i}", T0, 0.9) for i in range(60)]
        await store_predictions(conn, model, ticks, default_url=URL)
    claimed: list[list[int]] = []

    async def claimer() -> None:
        mine: list[int] = []
        while True:
            async with pool.acquire() as conn:
                jobs = (await outbox.claim_due(conn, limit=7, lease_seconds=30)).jobs
            if not jobs:
                break
            mine.extend(j.id for j in jobs)
        claimed.append(mine)

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(claimer)
    every = [job for mine in claimed for job in mine]
    assert len(every) == 60
    assert len(set(every)) == 60


async def test_expired_lease_returns_the_job_and_fences_the_old_holder(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        model = await insert_active_model(conn, 41)
        await store_predictions(conn, model, [("CoinA", T0, 0.9)], default_url=URL)
        first = (await outbox.claim_due(conn, limit=10, lease_seconds=0.2)).jobs
        assert len(first) == 1
        assert (await outbox.claim_due(conn, limit=10, lease_seconds=30)).jobs == []
        second = await wait_for(
            lambda: _claim(conn, limit=10, lease_seconds=30), what="lease expiry"
        )
        assert [j.id for j in second] == [first[0].id]
        # The crashed holder comes back late: its write is refused, the new holder's counts.
        delivered = outbox.Settlement(first[0].lease, "delivered", status_code=200)
        assert await outbox.settle(conn, [delivered]) == []
        retry = outbox.Settlement(second[0].lease, "pending", 60, "boom", 503)
        assert await outbox.settle(conn, [retry]) == [first[0].id]
        row = await outbox.get_job(conn, first[0].id)
        assert row is not None
        assert (row.status, row.attempts, row.last_status_code) == ("pending", 1, 503)
        assert row.next_attempt_at > datetime.now(UTC) + timedelta(seconds=50)
        # Not due yet: nothing to claim, and the next due time is about a minute away.
        assert (await outbox.claim_due(conn, limit=10, lease_seconds=30)).jobs == []
        wait = await outbox.seconds_until_next_due(conn)
        assert wait is not None and 50 < wait <= 60
        assert await outbox.outbox_depth(conn) == 1


async def test_dead_jobs_are_listed_and_can_be_requeued(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        a = await insert_active_model(conn, 41)
        b = await insert_active_model(conn, 42)
        await store_predictions(conn, a, [("CoinA", T0, 0.9)], default_url=URL)
        await store_predictions(conn, b, [("CoinB", T0, 0.9)], default_url=URL)
        jobs = (await outbox.claim_due(conn, limit=10, lease_seconds=30)).jobs
        await outbox.settle(
            conn, [outbox.Settlement(j.lease, "dead", 0, "HTTP 400", 400) for j in jobs]
        )
        total, dead = await outbox.list_dead(conn, limit=1, offset=0)
        total_a, dead_a = await outbox.list_dead(conn, limit=10, offset=0, active_model_id=a)
        assert total == 2 and len(dead) == 1
        assert total_a == 1 and dead_a[0].active_model_ids == (a,)
        assert await outbox.requeue_dead(conn, dead_a[0].id) == "requeued"
        assert await outbox.requeue_dead(conn, dead_a[0].id) == "not_dead"
        assert await outbox.requeue_dead(conn, 999_999) == "not_found"
        again = (await outbox.claim_due(conn, limit=10, lease_seconds=30)).jobs
        assert [j.id for j in again] == [dead_a[0].id]
        assert again[0].attempts == 0


async def test_a_claim_takes_every_models_job_of_a_coin_tick_together(pool: asyncpg.Pool) -> None:
    """Models commit one after another, so their jobs of one coin tick are far apart in the
    queue; a claim of the oldest job brings the others along, for one POST per coin."""
    async with pool.acquire() as conn:
        first = await insert_active_model(conn, 41)
        second = await insert_active_model(conn, 42)
        coins = [f"Coin{i}" for i in range(20)]
        await store_predictions(conn, first, [(c, T0, 0.9) for c in coins], default_url=URL)
        await store_predictions(conn, second, [(c, T0, 0.2) for c in coins], default_url=URL)
        jobs = (await outbox.claim_due(conn, limit=1, lease_seconds=30)).jobs
        again = (await outbox.claim_due(conn, limit=1, lease_seconds=30)).jobs
    assert {(j.coin_id, j.active_model_ids) for j in jobs} == {
        ("Coin0", (first,)),
        ("Coin0", (second,)),
    }
    assert {j.coin_id for j in again} == {"Coin1"} and len(again) == 2


async def test_a_claim_says_whether_due_jobs_were_left_behind(pool: asyncpg.Pool) -> None:
    """The dispatcher claims again at once only when `full`; the other models' jobs of the
    claimed ticks come along and do not count as left behind."""
    async with pool.acquire() as conn:
        first = await insert_active_model(conn, 41)
        second = await insert_active_model(conn, 42)
        await store_predictions(conn, first, [("CoinA", T0, 0.9)], default_url=URL)
        await store_predictions(conn, second, [("CoinA", T0, 0.9)], default_url=URL)
        whole_tick = await outbox.claim_due(conn, limit=2, lease_seconds=30)
        assert len(whole_tick.jobs) == 2 and not whole_tick.full

        coins = [(f"Coin{i}", T0, 0.9) for i in range(3)]
        await store_predictions(conn, first, coins, default_url=URL)
        await store_predictions(conn, second, coins, default_url=URL)
        cut = await outbox.claim_due(conn, limit=2, lease_seconds=30)
        rest = await outbox.claim_due(conn, limit=2, lease_seconds=30)
    assert sorted({j.coin_id for j in cut.jobs}) == ["Coin0", "Coin1"] and cut.full
    assert {j.coin_id for j in rest.jobs} == {"Coin2"} and len(rest.jobs) == 2
    assert not rest.full


async def test_jobs_left_held_by_the_previous_version_become_due(pool: asyncpg.Pool) -> None:
    """The previous version held a batch's jobs at 'infinity' until the batch was done;
    migration 0007 makes the ones a stop left behind due, or they would never go out."""
    sql = (MIGRATIONS / "0007_webhook_outbox_no_held_jobs.sql").read_text()
    async with pool.acquire() as conn:
        model = await insert_active_model(conn, 43)
        await store_predictions(conn, model, [("CoinA", T0, 0.9)], default_url=URL)
        await conn.execute("UPDATE webhook_outbox SET next_attempt_at = 'infinity'")
        assert (await outbox.claim_due(conn, limit=10, lease_seconds=30)).jobs == []
        await conn.execute(sql)
        claimed = await outbox.claim_due(conn, limit=10, lease_seconds=30)
    assert [(j.coin_id, j.active_model_ids) for j in claimed.jobs] == [("CoinA", (model,))]


async def _claim(
    conn: asyncpg.Connection, *, limit: int, lease_seconds: float
) -> list[outbox.ClaimedJob]:
    return (await outbox.claim_due(conn, limit=limit, lease_seconds=lease_seconds)).jobs
