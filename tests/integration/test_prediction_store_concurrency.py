"""One coin tick stored by two transactions at once holds each model once.

The batcher stores up to three batches at a time, and after a poller rewind or a
shard move the same tick can be in two of them; during a shard handover two
workers can store the same tick. Each test below runs real transactions on their
own connections: either interleaved explicitly (the first holds its write, the
second is seen waiting on it, then the first commits) or many at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from prediction_rows import add_model, batch_of, batch_target, new_prediction
from waiting import wait_for

from storage.outbox import jobs as outbox
from storage.outbox.jobs import OutboxJob
from storage.predictions.manual import insert_with_jobs
from storage.predictions.writes import BatchInsert, BatchRows, insert_batch, target_ids

AT = datetime(2026, 4, 1, 12, tzinfo=UTC)
URL = "http://127.0.0.1:9/hook"
# A manual prediction of 0 (its own tick row: source manual).
MANUAL = {"prediction": 0, "probability": 0.3, "tag": "negative", "source": "manual"}


def _tick_job(coin: str, at: datetime, models: list[int]) -> OutboxJob:
    """A batch's job of one coin tick to one URL, keyed by the tick (as `tick_jobs`)."""
    return OutboxJob(
        idempotency_key=f"{URL}|{coin}|{at.isoformat()}",
        target_url=URL,
        coin_id=coin,
        data_timestamp=at,
        active_model_ids=tuple(sorted(models)),
        model_ids=tuple(sorted(models)),
        payload='{"predictions": []}',
    )


async def _stored(pool: asyncpg.Pool) -> list[tuple[str, datetime, str, int]]:
    rows = await pool.fetch(
        "SELECT coin_id, data_timestamp, source, active_model_id FROM predictions"
        " ORDER BY coin_id, data_timestamp, source, active_model_id, id"
    )
    return [(r[0], r[1], r[2], r[3]) for r in rows]


async def _assert_each_tick_row_holds_each_model_once(pool: asyncpg.Pool) -> None:
    twice = await pool.fetch(
        "SELECT coin_id, data_timestamp, source, active_model_id, count(*) AS n"
        " FROM predictions GROUP BY 1, 2, 3, 4 HAVING count(*) > 1"
    )
    assert [tuple(r) for r in twice] == []
    ids = await pool.fetchval("SELECT count(*) - count(DISTINCT id) FROM predictions")
    assert ids == 0
    rows = await pool.fetch(
        "SELECT coin_id, data_timestamp, source, count(*) AS n FROM prediction_ticks"
        " GROUP BY 1, 2, 3 HAVING count(*) > 1"
    )
    assert [tuple(r) for r in rows] == []
    # Every stored element is a model's; the arrays stayed the same length.
    uneven = await pool.fetchval(
        "SELECT count(*) FROM prediction_ticks WHERE cardinality(target_ids)"
        " <> cardinality(probabilities) OR cardinality(target_ids) <> coalesce("
        "cardinality(codes), cardinality(target_ids))"
    )
    assert uneven == 0


async def _models(conn: asyncpg.Connection, *numbers: int) -> list[int]:
    """Active models with their target rows committed, so that a second writer waits on
    the first's tick row or key, not on a target row the first created."""
    models = [await add_model(conn, n) for n in numbers]
    await target_ids(conn, [batch_target(m) for m in models])
    return models


Write = Callable[[asyncpg.Connection], Awaitable[Any]]


def stores(rows: BatchRows) -> Write:
    return lambda conn: insert_batch(conn, rows)


async def _hold_then_commit(
    pool: asyncpg.Pool,
    first: asyncpg.Connection,
    second: asyncpg.Connection,
    first_write: Write,
    second_write: Write,
    meanwhile: Write | None = None,
) -> tuple[Any, Any, Any]:
    """The first transaction writes and holds; the second starts its write in a
    transaction and waits on the first's row or key; the first writes `meanwhile` (if
    any) and commits, then the second finishes. The three writes' results."""
    transaction = first.transaction()
    await transaction.start()
    held = await first_write(first)

    async def second_store() -> Any:
        async with second.transaction():
            return await second_write(second)

    late = asyncio.create_task(second_store())
    await _waiting_on_a_lock(pool, second)
    between = None if meanwhile is None else await meanwhile(first)
    await transaction.commit()
    return held, between, await late


async def _waiting_on_a_lock(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    async def waiting() -> bool:
        state = await pool.fetchval(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1", conn.get_server_pid()
        )
        return bool(state == "Lock")

    await wait_for(waiting, what="the second writer waiting on the first's write")


async def test_two_batches_appending_the_same_models_to_one_tick_store_them_once(
    pool: asyncpg.Pool,
) -> None:
    """The tick row exists; two batches in flight append the same new models to it: the
    second waits on the row, then finds them stored and appends nothing."""
    async with pool.acquire() as first, pool.acquire() as second:
        a, b, c = await _models(first, 41, 42, 43)
        await insert_batch(first, batch_of([("DUP", AT)], [a]))
        later = stores(batch_of([("DUP", AT)], [b, c]))
        held, _, late = await _hold_then_commit(pool, first, second, later, later)
    assert held == BatchInsert([], [])
    assert late == BatchInsert(existing=[0, 1], model_gone=[])
    assert await _stored(pool) == [("DUP", AT, "stream", m) for m in (a, b, c)]
    await _assert_each_tick_row_holds_each_model_once(pool)


async def test_two_batches_creating_one_tick_with_the_same_models_store_them_once(
    pool: asyncpg.Pool,
) -> None:
    """Neither batch sees the tick row when it starts: the second waits on the first's
    key, then stores only the model the first did not (its ids follow the first's)."""
    async with pool.acquire() as first, pool.acquire() as second:
        a, b, c = await _models(first, 51, 52, 53)
        held, _, late = await _hold_then_commit(
            pool,
            first,
            second,
            stores(batch_of([("NEW", AT), ("OTHER", AT)], [a, b])),
            stores(batch_of([("NEW", AT)], [b, c])),
        )
        ids = await first.fetch("SELECT id, active_model_id FROM predictions ORDER BY id")
    assert held == BatchInsert([], [])
    assert late == BatchInsert(existing=[0], model_gone=[])
    assert await _stored(pool) == [
        ("NEW", AT, "stream", a),
        ("NEW", AT, "stream", b),
        ("NEW", AT, "stream", c),
        ("OTHER", AT, "stream", a),
        ("OTHER", AT, "stream", b),
    ]
    assert len({r["id"] for r in ids}) == 5
    await _assert_each_tick_row_holds_each_model_once(pool)


async def test_two_transactions_writing_the_same_ticks_in_opposite_orders_do_not_deadlock(
    pool: asyncpg.Pool,
) -> None:
    """A batch lists its ticks in row id order, which two batches holding the same ticks
    need not share (a late row, a duplicate of a tick). The store takes the tick rows in
    key order, so a store waiting on another holds no row the other still needs: here
    the first writes A, the second B and A, then the first B (as its re-run of raced
    elements does); in row order the second would hold B while it waits on A, and
    PostgreSQL would abort one of them after deadlock_timeout."""
    async with pool.acquire() as first, pool.acquire() as second:
        [model] = await _models(first, 81)
        _, between, late = await _hold_then_commit(
            pool,
            first,
            second,
            stores(batch_of([("A", AT)], [model])),
            stores(batch_of([("B", AT), ("A", AT)], [model])),
            meanwhile=stores(batch_of([("B", AT)], [model])),
        )
        assert between == BatchInsert([], [])
        assert late == BatchInsert(existing=[0, 1], model_gone=[])
    assert await _stored(pool) == [("A", AT, "stream", model), ("B", AT, "stream", model)]
    await _assert_each_tick_row_holds_each_model_once(pool)


async def test_two_transactions_queueing_new_snapshots_in_opposite_orders_do_not_deadlock(
    pool: asyncpg.Pool,
) -> None:
    """Every batch's jobs name the same models' snapshots; after a model change two
    stores insert the new ones at once, in whatever order their jobs list them: they are
    inserted in key order (plain and leased queueing)."""

    def job(coin: str, snapshot: str) -> OutboxJob:
        return dataclasses.replace(
            _tick_job(coin, AT, [1]), snapshots=(outbox.ModelSnapshot(snapshot, "{}"),)
        )

    async with pool.acquire() as first, pool.acquire() as second:
        for queue in (
            outbox.enqueue,
            lambda conn, jobs: outbox.enqueue_leased(
                conn, jobs, [True] * len(jobs), lease_seconds=60.0
            ),
        ):
            await first.execute("TRUNCATE webhook_outbox CASCADE")
            await first.execute("DELETE FROM webhook_model_snapshots")

            def queues(*jobs: OutboxJob, queue: Any = queue) -> Write:
                return lambda conn: queue(conn, list(jobs))

            await _hold_then_commit(
                pool,
                first,
                second,
                queues(job("A1", "ka")),
                queues(job("B2", "kb"), job("A2", "ka")),
                meanwhile=queues(job("B1", "kb")),
            )
            coins = await pool.fetch("SELECT coin_id FROM webhook_outbox ORDER BY 1")
            assert [r[0] for r in coins] == ["A1", "A2", "B1", "B2"]
            keys = await pool.fetch("SELECT key FROM webhook_model_snapshots ORDER BY 1")
            assert [r[0] for r in keys] == ["ka", "kb"]


async def test_a_manual_prediction_has_its_own_tick_row_and_never_repeats_a_stream_one(
    pool: asyncpg.Pool,
) -> None:
    """source=manual is its own row of the coin tick; a model the stream row holds is not
    stored manually again, and queues no job."""
    async with pool.acquire() as conn:
        a, b = await add_model(conn, 61), await add_model(conn, 62)
        await insert_batch(conn, batch_of([("MAN", AT)], [a]))
        job = _tick_job("MAN", AT, [b])
        stored, queued = await insert_with_jobs(
            conn, [new_prediction(b, "MAN", AT, model_id=b, **MANUAL)], [job]
        )
        assert (len(stored), queued) == (1, 1)
        again = dataclasses.replace(_tick_job("MAN", AT, [a]), idempotency_key="manual-a")
        assert await insert_with_jobs(
            conn, [new_prediction(a, "MAN", AT, model_id=a, **MANUAL)], [again]
        ) == ([], 0)
    assert await _stored(pool) == [("MAN", AT, "manual", b), ("MAN", AT, "stream", a)]
    sources = await pool.fetch("SELECT source::text FROM prediction_ticks ORDER BY source")
    assert [r["source"] for r in sources] == ["m", "s"]
    await _assert_each_tick_row_holds_each_model_once(pool)


async def test_many_overlapping_batches_at_once_store_each_model_of_each_tick_once(
    pool: asyncpg.Pool,
) -> None:
    """Writers start each round together with random overlapping ticks and models, and
    queue the batch's tick jobs in their transaction as the batcher does: every
    (tick, model) is stored once and reported new by exactly one writer, and each tick
    has one job per URL."""
    rng = random.Random(19)
    writers, rounds = 4, 16
    coins = ["C0", "C1", "C2"]
    times = [AT + timedelta(seconds=s) for s in (0, 5, 10)]
    async with pool.acquire() as conn:
        models = await _models(conn, 70, 71, 72, 73)
    plans = [
        [
            (
                rng.sample([(c, t) for c in coins for t in times], rng.randint(1, 5)),
                sorted(rng.sample(models, rng.randint(1, 4))),
            )
            for _ in range(rounds)
        ]
        for _ in range(writers)
    ]
    claimed: Counter[tuple[str, datetime, int]] = Counter()
    queued_total = 0
    retries = 0
    barrier = asyncio.Barrier(writers)

    async def writer(plan: list[tuple[list[tuple[str, datetime]], list[int]]]) -> None:
        nonlocal queued_total, retries
        async with pool.acquire() as conn:
            for ticks, chosen in plan:
                await barrier.wait()
                rows = batch_of(ticks, chosen)
                while True:
                    try:
                        async with conn.transaction():
                            outcome = await insert_batch(conn, rows)
                            fresh = [
                                k for k in range(len(rows.model_index)) if k not in outcome.existing
                            ]
                            per_tick: dict[int, list[int]] = {}
                            for k in fresh:
                                model = chosen[rows.model_index[k]]
                                per_tick.setdefault(rows.tick_index[k], []).append(model)
                            jobs = [_tick_job(*ticks[t], ms) for t, ms in per_tick.items()]
                            queued = await outbox.enqueue(conn, jobs) if jobs else 0
                    except asyncpg.DeadlockDetectedError:
                        retries += 1  # the batcher tries a transient error again
                        continue
                    break
                assert outcome.model_gone == []
                for k in fresh:
                    tick = ticks[rows.tick_index[k]]
                    claimed[(*tick, chosen[rows.model_index[k]])] += 1
                queued_total += queued

    async with asyncio.TaskGroup() as group:  # one writer failing stops the others
        for plan in plans:
            group.create_task(writer(plan))

    await _assert_each_tick_row_holds_each_model_once(pool)
    wanted = {(c, t, m) for plan in plans for ticks, ms in plan for c, t in ticks for m in ms}
    stored = await _stored(pool)
    assert sorted((c, t, m) for c, t, _, m in stored) == sorted(wanted)
    assert [key for key, n in claimed.items() if n > 1] == []
    assert set(claimed) == wanted
    jobs = await pool.fetch(
        "SELECT target_url, coin_id, data_timestamp, count(*) AS n FROM webhook_outbox"
        " GROUP BY 1, 2, 3"
    )
    assert {r["n"] for r in jobs} == {1}
    assert len(jobs) == queued_total == len({(c, t) for c, t, _ in wanted})
