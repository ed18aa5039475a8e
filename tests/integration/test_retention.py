"""Retention of webhook jobs on a real PostgreSQL: what goes, what stays, and that it is safe.

Jobs are queued the way the service queues them (predictions and `webhook_jobs` +
`outbox.enqueue` in one transaction, see webhook_receiver.store_predictions),
claimed and settled with the dispatcher's own queries, then aged by moving their
timestamps back (test data setup: a day cannot pass in a test).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import anyio
import asyncpg
from service_runner import running_service
from waiting import wait_for
from webhook_receiver import insert_active_model, store_predictions

from actors.housekeeping.retention import Retention
from actors.runtime import metrics
from storage.config import Settings
from storage.outbox import jobs as outbox
from storage.outbox.attempts import AttemptRecord, attempts_for_job, record_attempts

URL = "http://127.0.0.1:9/hook"
DAY = 86400


def _retention(pool: asyncpg.Pool, **options: Any) -> Retention:
    values: dict[str, Any] = {"retention_seconds": DAY, "interval": 0.05, "chunk_rows": 1000}
    values.update(options)
    return Retention(pool, **values)


def _errors() -> float:
    try:
        return float(metrics.RETENTION_ERRORS.get({}))
    except KeyError:
        return 0.0


def _deleted(table: str) -> float:
    try:
        return float(metrics.RETENTION_DELETED.get({"table": table}))
    except KeyError:
        return 0.0


async def _queue(
    conn: asyncpg.Connection, model: int, coins: Sequence[str], at: datetime
) -> dict[str, int]:
    """One job per coin tick, as the service queues it; job id by coin."""
    await store_predictions(conn, model, [(coin, at, 0.9) for coin in coins], default_url=URL)
    rows = await conn.fetch(
        "SELECT id, coin_id FROM webhook_outbox WHERE coin_id = ANY($1::text[])", list(coins)
    )
    return {r["coin_id"]: r["id"] for r in rows}


async def _settle(
    conn: asyncpg.Connection, job_ids: Sequence[int], status: outbox.JobStatus
) -> None:
    """Claim and settle jobs as the dispatcher does (one attempt each, logged)."""
    claimed = (await outbox.claim_due(conn, limit=1000, lease_seconds=30)).jobs
    mine = [j for j in claimed if j.id in set(job_ids)]
    assert len(mine) == len(job_ids)
    await outbox.release(conn, [j.lease for j in claimed if j.id not in set(job_ids)])
    kind = {"delivered": "delivered", "dead": "dead", "pending": "retry"}[status]
    await record_attempts(
        conn,
        [
            AttemptRecord(
                j.id, 1, j.target_url, j.active_model_ids, j.model_ids, 200, 5.0, None, kind
            )
            for j in mine
        ],
    )
    settled = await outbox.settle(
        conn,
        [outbox.Settlement(j.lease, status, 3600.0 if status == "pending" else 0.0) for j in mine],
    )
    assert settled == sorted(job_ids)


async def _age(conn: asyncpg.Connection, job_ids: Sequence[int], seconds: float) -> None:
    """Move a job's whole life `seconds` into the past."""
    await conn.execute(
        """
        UPDATE webhook_outbox
        SET created_at = created_at - make_interval(secs => $2),
            next_attempt_at = next_attempt_at - make_interval(secs => $2),
            delivered_at = delivered_at - make_interval(secs => $2)
        WHERE id = ANY($1::bigint[])
        """,
        list(job_ids),
        float(seconds),
    )
    await conn.execute(
        "UPDATE webhook_attempts SET attempted_at = attempted_at - make_interval(secs => $2)"
        " WHERE outbox_id = ANY($1::bigint[])",
        list(job_ids),
        float(seconds),
    )


async def _column(conn: asyncpg.Connection, column: str, table: str) -> set[Any]:
    return {r[0] for r in await conn.fetch(f"SELECT {column} FROM {table}")}


async def _job_ids(conn: asyncpg.Connection) -> set[int]:
    return await _column(conn, "id", "webhook_outbox")


async def _snapshot_keys(conn: asyncpg.Connection) -> set[str]:
    return await _column(conn, "key", "webhook_model_snapshots")


async def test_old_done_jobs_go_with_their_attempts_pending_and_recent_ones_stay(
    pool: asyncpg.Pool,
) -> None:
    old_tick = datetime.now(UTC) - timedelta(days=3)
    async with pool.acquire() as conn:
        model = await insert_active_model(conn, 41)
        jobs = await _queue(conn, model, ["Delivered", "Dead", "Recent", "Pending"], old_tick)
        # A tick stamped now (collector clock ahead, backfill...) whose job is old.
        jobs |= await _queue(conn, model, ["YoungTick"], datetime.now(UTC))
        await _settle(conn, [jobs["Delivered"], jobs["Recent"], jobs["YoungTick"]], "delivered")
        await _settle(conn, [jobs["Dead"]], "dead")
        await _settle(conn, [jobs["Pending"]], "pending")  # waiting for a retry
        old = [jobs[c] for c in ("Delivered", "Dead", "Pending", "YoungTick")]
        await _age(conn, old, 2 * DAY)
        await _age(conn, [jobs["Recent"]], DAY - 600)  # delivered 23 h 50 min ago
        before = _deleted("webhook_outbox"), _deleted("webhook_attempts")

        done = await _retention(pool).run_once()

        assert (done.jobs, done.attempts) == (2, 2)
        assert await _job_ids(conn) == {jobs["Recent"], jobs["Pending"], jobs["YoungTick"]}
        for gone in ("Delivered", "Dead"):
            assert await attempts_for_job(conn, jobs[gone]) == []
            assert await outbox.get_job(conn, jobs[gone]) is None
        assert len(await attempts_for_job(conn, jobs["Recent"])) == 1
        pending = await outbox.get_job(conn, jobs["Pending"])
        assert pending is not None and pending.status == "pending"
        assert (_deleted("webhook_outbox"), _deleted("webhook_attempts")) == (
            before[0] + 2,
            before[1] + 2,
        )
        # Nothing left to delete: a second pass deletes nothing.
        again = await _retention(pool).run_once()
        assert (again.jobs, again.attempts, again.snapshots) == (0, 0, 0)


async def test_pending_jobs_stay_however_old(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        model = await insert_active_model(conn, 41)
        jobs = await _queue(conn, model, ["Never", "Retrying"], datetime(2025, 1, 1, tzinfo=UTC))
        await _settle(conn, [jobs["Retrying"]], "pending")
        await _age(conn, list(jobs.values()), 300 * DAY)
        done = await _retention(pool).run_once()
        assert done.jobs == 0
        assert await _job_ids(conn) == set(jobs.values())


async def test_every_old_job_goes_in_chunks_smaller_than_the_backlog(pool: asyncpg.Pool) -> None:
    old_tick = datetime.now(UTC) - timedelta(days=3)
    async with pool.acquire() as conn:
        model = await insert_active_model(conn, 41)
        coins = [f"Coin{i:02d}" for i in range(23)]
        jobs = await _queue(conn, model, [*coins, "Pending"], old_tick)
        await _settle(conn, [jobs[c] for c in coins], "delivered")
        await _age(conn, list(jobs.values()), 2 * DAY)

        done = await _retention(pool, chunk_rows=5).run_once()

        assert (done.jobs, done.attempts, done.chunks) == (23, 23, 5)  # 5+5+5+5+3
        assert await _job_ids(conn) == {jobs["Pending"]}
        assert await conn.fetchval("SELECT count(*) FROM webhook_attempts") == 0


async def test_only_old_snapshots_no_job_refers_to_go(pool: asyncpg.Pool) -> None:
    old_tick = datetime.now(UTC) - timedelta(days=3)
    async with pool.acquire() as conn:
        kept_by_job = await insert_active_model(conn, 41)
        orphan = await insert_active_model(conn, 42)
        young = await insert_active_model(conn, 43)
        pending = await _queue(conn, kept_by_job, ["A"], old_tick)
        done_orphan = await _queue(conn, orphan, ["B"], old_tick)
        done_young = await _queue(conn, young, ["C"], old_tick)
        await _settle(conn, [done_orphan["B"], done_young["C"]], "delivered")
        await _age(conn, [pending["A"], done_orphan["B"], done_young["C"]], 2 * DAY)
        snapshot_of = {
            r["model"]: r["key"]
            for r in await conn.fetch(
                # An item tail (what new jobs refer to) holds its model under "model".
                "SELECT (coalesce(model_json::jsonb->'model', model_json::jsonb)"
                "->>'active_model_id')::bigint AS model, key FROM webhook_model_snapshots"
            )
        }
        assert len(set(snapshot_of.values())) == 3
        await conn.execute(
            "UPDATE webhook_model_snapshots SET created_at = now() - interval '2 days'"
            " WHERE key = ANY($1::text[])",
            [snapshot_of[kept_by_job], snapshot_of[orphan]],
        )
        before = _deleted("webhook_model_snapshots")

        done = await _retention(pool).run_once()

        assert (done.jobs, done.snapshots) == (2, 1)
        assert await _snapshot_keys(conn) == {snapshot_of[kept_by_job], snapshot_of[young]}
        assert _deleted("webhook_model_snapshots") == before + 1
        # The pending job can still be shown (and sent) with its model in full.
        job = await outbox.get_job(conn, pending["A"])
        assert job is not None
        assert job.payload["predictions"][0]["model"]["name"] == "model-41"


async def test_a_snapshot_reused_by_a_job_being_queued_is_not_deleted(
    pool: asyncpg.Pool,
) -> None:
    """The trap: re-queueing an old snapshot (ON CONFLICT DO NOTHING) neither refreshes its
    age nor locks it, and the job that refers to it is invisible until it commits. The
    pass waits for the queueing transaction instead of deleting the snapshot under it."""
    old_tick = datetime.now(UTC) - timedelta(days=3)
    async with pool.acquire() as conn:
        model = await insert_active_model(conn, 41)
        first = await _queue(conn, model, ["Old"], old_tick)
        await _settle(conn, [first["Old"]], "delivered")
        await _age(conn, [first["Old"]], 2 * DAY)
        await conn.execute(
            "UPDATE webhook_model_snapshots SET created_at = now() - interval '2 days'"
        )
        (key,) = await _snapshot_keys(conn)

    result: list[Any] = []

    async def sweep() -> None:
        result.append(await _retention(pool).run_once())

    async with pool.acquire() as writer, pool.acquire() as watcher:

        async def sweep_waits_for_the_writer() -> bool:
            return bool(
                await watcher.fetchval(
                    "SELECT count(*) FROM pg_locks"
                    " WHERE relation = 'webhook_model_snapshots'::regclass AND NOT granted"
                )
            )

        async with anyio.create_task_group() as tg:
            async with writer.transaction():
                # The model's next tick, queued and not committed: refers to the old snapshot.
                await store_predictions(
                    writer, model, [("New", datetime.now(UTC), 0.9)], default_url=URL
                )
                tg.start_soon(sweep)
                await wait_for(sweep_waits_for_the_writer, what="the sweep to wait for the lock")
            # Committed; the task group waits for the sweep to finish.

    assert (result[0].jobs, result[0].snapshots) == (1, 0)
    async with pool.acquire() as conn:
        assert await _snapshot_keys(conn) == {key}
        (new_job,) = await _job_ids(conn)
        job = await outbox.get_job(conn, new_job)
        assert job is not None and job.coin_id == "New"
        assert job.payload["predictions"][0]["model"]["name"] == "model-41"


async def test_a_failed_pass_is_counted_and_the_next_one_deletes(pool: asyncpg.Pool) -> None:
    """Like the evaluator: a database error ends the pass, the actor keeps running."""
    old_tick = datetime.now(UTC) - timedelta(days=3)
    async with pool.acquire() as conn:
        model = await insert_active_model(conn, 41)
        jobs = await _queue(conn, model, ["A"], old_tick)
        await _settle(conn, [jobs["A"]], "delivered")
        await _age(conn, [jobs["A"]], 2 * DAY)
        await conn.execute(
            "UPDATE webhook_model_snapshots SET created_at = now() - interval '2 days'"
        )
    errors_before = _errors()
    actor = _retention(pool, lock_timeout_seconds=0.1)
    async with pool.acquire() as conn, pool.acquire() as blocker:
        # Someone holds the snapshot table (a writer that never commits, a manual session)
        # before the first pass, which would otherwise delete the snapshot unhindered.
        held = blocker.transaction()
        await held.start()
        await blocker.execute("LOCK TABLE webhook_model_snapshots IN ROW EXCLUSIVE MODE")
        async with anyio.create_task_group() as tg:
            await tg.start(actor.run)
            await wait_for(lambda: actor.failed_sweeps >= 2, what="two failed passes")
            assert _errors() >= errors_before + 2
            assert await _snapshot_keys(conn)
            await held.commit()

            # The lock is gone: a later pass deletes what the failed ones could not.
            async def snapshot_gone() -> bool:
                return not await _snapshot_keys(conn)

            await wait_for(snapshot_gone, what="the snapshot to be deleted after the lock")
            assert await _job_ids(conn) == set()
            actor.request_stop()


async def test_the_running_service_deletes_an_aged_delivered_job_by_itself(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    old_tick = datetime.now(UTC) - timedelta(days=3)
    async with pool.acquire() as conn:
        # Inactive: the service has no model file to load, and needs none to keep its outbox.
        model = await insert_active_model(conn, 41, is_active=False)
        jobs = await _queue(conn, model, ["Delivered", "Pending"], old_tick)
        await _settle(conn, [jobs["Delivered"]], "delivered")
        await _settle(conn, [jobs["Pending"]], "pending")
    configured = settings.replace(retention_interval_seconds=0.2)
    async with running_service(configured) as service, pool.acquire() as conn:
        retention = service.supervisor.actor("retention")
        # Young yet: the first passes keep it.
        await wait_for(lambda: retention.passes >= 1, what="a first retention pass")
        assert await _job_ids(conn) == set(jobs.values())
        # Pending jobs stay however old (the dispatcher may retry it meanwhile: it fails).
        await _age(conn, [jobs["Delivered"]], 2 * DAY)

        async def delivered_job_gone() -> bool:
            return jobs["Delivered"] not in await _job_ids(conn)

        await wait_for(delivered_job_gone, what="the retention actor to delete the old job")
        assert await _job_ids(conn) == {jobs["Pending"]}
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{service.web_port}/api/config") as response,
        ):
            config = await response.json()
        assert config["webhook_retention_seconds"] == settings.webhook_retention_seconds == 21600
        assert config["webhook_dead_retention_seconds"] == 7 * DAY
        assert config["retention_interval_seconds"] == 0.2
        assert config["retention_chunk_rows"] == settings.retention_chunk_rows


async def _evaluate(conn: asyncpg.Connection, coins: Sequence[str]) -> None:
    """Judge these coins' predictions (test data setup: the evaluator needs price rows):
    their price paths get an outcome and leave the evaluator's queue."""
    await conn.execute(
        """
        WITH judged AS (
            INSERT INTO tick_outcomes (tick_id, horizon_s, variable, state)
            SELECT DISTINCT tick_id, horizon_s, outcome_variable, 0 FROM prediction_rows
            WHERE coin_id = ANY($1::text[])
            ON CONFLICT DO NOTHING
            RETURNING tick_id, horizon_s, variable
        )
        DELETE FROM prediction_due d USING judged j
        WHERE (d.tick_id, d.horizon_s, d.variable) = (j.tick_id, j.horizon_s, j.variable)
        """,
        list(coins),
    )


async def _prediction_coins(conn: asyncpg.Connection) -> set[str]:
    return await _column(conn, "coin_id", "predictions")


async def test_old_evaluated_predictions_go_pending_and_recent_ones_and_jobs_stay(
    pool: asyncpg.Pool,
) -> None:
    old_tick = datetime.now(UTC) - timedelta(days=3)
    async with pool.acquire() as conn:
        model = await insert_active_model(conn, 41)
        jobs = await _queue(conn, model, ["Judged", "Pending"], old_tick)
        await _queue(conn, model, ["Recent"], datetime.now(UTC) - timedelta(hours=20))
        await _evaluate(conn, ["Judged", "Recent"])
        before = _deleted("predictions")

        # Webhook jobs are kept (0), predictions for a day: only the judged old one goes.
        done = await _retention(
            pool, retention_seconds=0, prediction_retention_seconds=DAY
        ).run_once()

        assert (done.predictions, done.jobs, done.cutoff) == (1, 0, None)
        assert await _prediction_coins(conn) == {"Pending", "Recent"}
        assert _deleted("predictions") == before + 1
        # Its webhook job is a record of its own and stays for the webhook retention.
        assert await _job_ids(conn) >= set(jobs.values())
        again = _retention(pool, retention_seconds=0, prediction_retention_seconds=DAY)
        assert (await again.run_once()).predictions == 0


async def test_every_old_prediction_goes_in_chunks_and_nothing_when_kept(
    pool: asyncpg.Pool,
) -> None:
    coins = [f"Coin{i}" for i in range(7)]
    async with pool.acquire() as conn:
        model = await insert_active_model(conn, 41)
        await _queue(conn, model, coins, datetime.now(UTC) - timedelta(days=3))
        await _evaluate(conn, coins)
        # The default keeps every prediction: a webhook-only pass leaves them alone.
        assert (await _retention(pool).run_once()).predictions == 0
        assert await _prediction_coins(conn) == set(coins)

        done = await _retention(pool, prediction_retention_seconds=DAY, chunk_rows=3).run_once()

        assert done.predictions == 7
        assert await _prediction_coins(conn) == set()


async def test_dead_jobs_are_kept_longer_than_delivered_ones(pool: asyncpg.Pool) -> None:
    old_tick = datetime.now(UTC) - timedelta(days=10)
    async with pool.acquire() as conn:
        model = await insert_active_model(conn, 41)
        jobs = await _queue(conn, model, ["Delivered", "DeadRecent", "DeadOld"], old_tick)
        await _settle(conn, [jobs["Delivered"]], "delivered")
        await _settle(conn, [jobs["DeadRecent"], jobs["DeadOld"]], "dead")
        await _age(conn, [jobs["Delivered"], jobs["DeadRecent"]], 2 * DAY)
        await _age(conn, [jobs["DeadOld"]], 8 * DAY)

        done = await _retention(pool, dead_retention_seconds=7 * DAY).run_once()

        assert done.jobs == 2
        assert await _job_ids(conn) == {jobs["DeadRecent"]}
        # A period of 0 keeps that status's jobs, however old.
        kept = await _retention(pool, retention_seconds=DAY, dead_retention_seconds=0).run_once()
        assert kept.jobs == 0 and await _job_ids(conn) == {jobs["DeadRecent"]}
