"""Jobs leased to a dispatcher in the transaction that queues them (the batcher's way).

The batcher hands a batch's jobs straight to its own process's dispatcher instead of
letting any dispatcher claim them. The guarantees of a claim must hold: each job is
sent once under its Idempotency-Key while another dispatcher keeps looking, and the
jobs of a dispatcher that died before sending them are sent by another once their
lease ends.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import anyio
import asyncpg
from anyio.abc import TaskStatus
from conftest import PgCluster
from waiting import wait_for
from webhook_receiver import (
    Answer,
    WebhookReceiver,
    insert_active_model,
    load_webhook_model,
    quick_dispatcher,
    running,
)

from actors.webhooks.dispatcher import UnsentJobs, handoff_batches
from actors.webhooks.payload import ReportedPrediction, tick_jobs, webhook_items
from storage.outbox import jobs as outbox

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


async def _batch_jobs(conn: asyncpg.Connection, url: str, coins: int) -> list[outbox.OutboxJob]:
    """A batch's jobs as the batcher makes them: two models, one job per coin tick."""
    models = [await insert_active_model(conn, 41 + k) for k in range(2)]
    items = []
    for active_model_id in models:
        model = await load_webhook_model(conn, active_model_id)
        reported = [
            ReportedPrediction(f"Coin{i}", T0 + timedelta(seconds=i), 1, 0.9, "alert", 0.8)
            for i in range(coins)
        ]
        items += webhook_items(model, reported, default_url=url)
    return tick_jobs(items)


async def _queue_batch(
    pool: asyncpg.Pool, url: str, coins: int, *, lease_seconds: float
) -> tuple[list[outbox.ClaimedJob], dict[str, str]]:
    """A batch's jobs queued as the batcher queues them, every one leased; returns the
    leased jobs and their snapshots' texts."""
    async with pool.acquire() as conn:
        jobs = await _batch_jobs(conn, url, coins)
        async with conn.transaction():
            queued, leased = await outbox.enqueue_leased(
                conn, jobs, [True] * len(jobs), lease_seconds=lease_seconds
            )
    assert queued == len(leased) == coins
    return leased, {s.key: s.json for job in jobs for s in job.snapshots}


async def _delivered(pool: asyncpg.Pool, jobs: int) -> bool:
    rows = await pool.fetch("SELECT status FROM webhook_outbox")
    return Counter(r["status"] for r in rows) == {"delivered": jobs}


async def test_jobs_handed_to_a_dispatcher_are_sent_once_by_it_while_another_claims(
    pool: asyncpg.Pool, receiver: WebhookReceiver
) -> None:
    holder, other = quick_dispatcher(pool), quick_dispatcher(pool)
    async with running(holder, other):
        leased, snapshots = await _queue_batch(
            pool, receiver.url(), 30, lease_seconds=holder.lease_seconds
        )
        holder.take(leased, snapshots, time.monotonic() + holder.lease_seconds)
        for _ in range(5):
            other.poke(whole_ticks=True)  # the other one looks, and finds nothing due
            await anyio.sleep(0.02)
        await wait_for(lambda: _delivered(pool, 30), what="all delivered")
    keys = Counter(r.headers["Idempotency-Key"] for r in receiver.received())
    assert keys == Counter({job.idempotency_key: 1 for job in leased})
    assert {len(r.body["predictions"]) for r in receiver.received()} == {2}
    assert (holder.delivered_jobs, other.delivered_jobs) == (30, 0)


async def test_jobs_leased_to_a_dispatcher_that_died_are_sent_by_another_after_the_lease(
    pool: asyncpg.Pool, receiver: WebhookReceiver
) -> None:
    # Leased to a dispatcher that never got them (its process was killed after the commit).
    leased, _ = await _queue_batch(pool, receiver.url(), 5, lease_seconds=0.5)
    other = quick_dispatcher(pool)
    async with running(other):
        await wait_for(lambda: _delivered(pool, 5), what="all delivered")
    keys = Counter(r.headers["Idempotency-Key"] for r in receiver.received())
    assert keys == Counter({job.idempotency_key: 1 for job in leased})
    assert other.delivered_jobs == 5


async def test_after_jobs_waited_for_a_claim_newer_ones_are_not_handed_over_until_it_caught_up(
    pool: asyncpg.Pool, receiver: WebhookReceiver
) -> None:
    """Jobs queued without a lease (no room then) are claimed in due order; handing newer
    jobs of the same host to the dispatcher meanwhile would let them overtake the older
    ones for as long as the load lasts (and old jobs die of age)."""
    dispatcher = quick_dispatcher(pool, per_host_limit=4)
    url = receiver.url()
    assert dispatcher.handoff_room([url]) == {url: 4}
    # A batch found no room for these: they are in the outbox, unleased.
    await _queue_batch(pool, url, 6, lease_seconds=0.0)
    await pool.execute("UPDATE webhook_outbox SET locked_until = NULL")
    dispatcher.spilled([url])
    assert dispatcher.handoff_room([url]) == {url: 0}
    async with running(dispatcher):
        dispatcher.poke(whole_ticks=True)
        await wait_for(lambda: _delivered(pool, 6), what="the waiting jobs delivered")
        # (Its local queue may now be deeper: the receiver answers quickly.)
        await wait_for(lambda: dispatcher.handoff_room([url])[url] >= 4, what="handing over")


async def test_jobs_a_crashed_dispatcher_had_not_sent_are_sent_by_its_successor_at_once(
    pg_cluster: PgCluster, db_dsn: str, pool: asyncpg.Pool, receiver: WebhookReceiver
) -> None:
    """A database outage crashes the dispatcher holding handed-over jobs; the instance the
    supervisor starts next in the same process sends them well before their lease ends
    (a claim would find them only then), once each under their Idempotency-Key."""
    lease = 30.0
    unsent = UnsentJobs()
    first = quick_dispatcher(pool, lease_seconds=lease, unsent=unsent)
    leased, snapshots = await _queue_batch(pool, receiver.url(), 6, lease_seconds=lease)
    crashed: list[BaseException] = []

    async def until_crash(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            await first.run(task_status=task_status)
        except Exception as exc:
            crashed.append(exc)

    database = urlsplit(db_dsn).path.lstrip("/")
    admin = await asyncpg.connect(pg_cluster.admin_dsn)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(until_crash)
            await wait_for(lambda: first.claims > 0, what="the first claim")
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                database,
            )
            first.take(leased, snapshots, time.monotonic() + lease)
            await wait_for(lambda: crashed, what="the dispatcher to crash")
    finally:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await admin.close()
    assert receiver.received() == []
    assert first.handoff_room([receiver.url()]) == {}  # the batcher leases it nothing more
    successor = quick_dispatcher(pool, lease_seconds=lease, unsent=unsent)
    async with running(successor):
        await wait_for(lambda: _delivered(pool, 6), timeout=lease / 3, what="all delivered")
    keys = Counter(r.headers["Idempotency-Key"] for r in receiver.received())
    assert keys == Counter({job.idempotency_key: 1 for job in leased})
    assert successor.delivered_jobs == 6


async def test_with_batched_delivery_batches_are_handed_over_and_a_failed_one_is_retried_whole(
    pool: asyncpg.Pool, receiver: WebhookReceiver
) -> None:
    """WEBHOOK_BATCH_MAX_TICKS > 1: the batcher leases whole batches (their keys recorded
    by the INSERT, no claim needed to form them); a batch that failed comes back from a
    claim with the same ticks under the same Idempotency-Key."""
    url = receiver.url("/hook")
    receiver.script("/hook", [Answer(503)])
    holder = quick_dispatcher(pool, batch_max_ticks=4)
    # Room for per_host_limit (4) POSTs of up to 4 ticks each.
    assert holder.handoff_room([url]) == {url: 16}
    async with pool.acquire() as conn:
        jobs = await _batch_jobs(conn, url, 10)
        leased = [True] * len(jobs)
        planned = handoff_batches(jobs, leased, holder.batch_max_ticks)
        async with conn.transaction():
            _, handed = await outbox.enqueue_leased(
                conn, jobs, leased, lease_seconds=holder.lease_seconds, batch_keys=planned
            )
        stored = dict(await conn.fetch("SELECT idempotency_key, batch_key FROM webhook_outbox"))
    assert sorted(Counter(planned).values()) == [2, 4, 4]
    assert stored == {job.idempotency_key: key for job, key in zip(jobs, planned, strict=True)}
    snapshots = {s.key: s.json for job in jobs for s in job.snapshots}
    async with running(holder):
        holder.take(handed, snapshots, time.monotonic() + holder.lease_seconds)
        await wait_for(lambda: _delivered(pool, 10), what="all delivered")

    posts = receiver.received("/hook")
    assert all(isinstance(p.body, list) for p in posts)
    tick_sets = {
        p.headers["Idempotency-Key"]: sorted((e["coin_id"], e["timestamp"]) for e in p.body)
        for p in posts
    }
    # Each POST is one planned batch; the failed one was sent again whole, same key.
    assert set(tick_sets) == set(planned)
    failed = [p for p in posts if p.status == 503]
    assert len(failed) == 1
    retried = [
        p for p in posts if p.headers["Idempotency-Key"] == failed[0].headers["Idempotency-Key"]
    ]
    assert [p.status for p in retried] == [503, 200]
    delivered = [
        tick for p in posts if p.status == 200 for tick in tick_sets[p.headers["Idempotency-Key"]]
    ]
    assert sorted(delivered) == sorted(
        (f"Coin{i}", (T0 + timedelta(seconds=i)).isoformat()) for i in range(10)
    )
