"""The dispatcher's outbox statements use the outbox's indexes, batches included.

On an outbox of realistic shape (200 000 jobs, nearly all delivered: retention
keeps hours of them; 1 % pending, some of those in batches of batched delivery),
each statement a claim, a batch record and a settlement send is planned by
PostgreSQL (tests/query_plans.py) with its real arguments and as the generic plan
asyncpg may switch to. A plan that scans the table fails with the whole plan in
the message: the dispatcher claims several times a second.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest
from query_plans import Plan, RecordingConnection, index_tables, plans, recording_connection
from waiting import wait_for

from storage.outbox import jobs as outbox
from storage.outbox.attempts import model_status

JOBS = 200_000


@pytest.fixture
async def conn(db_dsn: str) -> AsyncIterator[RecordingConnection]:
    """A connection to a database whose outbox holds 200 000 jobs: 99 % delivered, the
    pending ones due, a third of them in two-job batches, with fresh statistics."""
    connection = await recording_connection(db_dsn)
    await connection.execute(
        f"""
        INSERT INTO webhook_outbox (idempotency_key, target_url, coin_id, data_timestamp,
            active_model_ids, model_ids, payload, status, next_attempt_at, batch_key)
        SELECT 'key-' || g, 'https://n8n.example/webhook/pump', 'Coin' || (g % 2000),
               now() - make_interval(secs => {JOBS} - g), '{{1}}', '{{41}}',
               '{{"timestamp": "t", "predictions": [], "metadata":
                 {{"alerts_count": 0, "version": "v"}}}}'::jsonb,
               CASE WHEN g % 100 = 0 THEN 'pending' ELSE 'delivered' END,
               now() - make_interval(secs => {JOBS} - g),
               CASE WHEN g % 300 = 0 THEN 'batch-' || (g / 600) END
        FROM generate_series(1, {JOBS}) AS g
        """
    )
    await connection.execute("ANALYZE webhook_outbox")
    try:
        yield connection
    finally:
        await connection.close()


async def test_claim_batch_record_and_settlement_never_scan_the_outbox(
    conn: RecordingConnection,
) -> None:
    conn.start_recording()
    async with conn.transaction():
        claimed = await outbox.claim_due(conn, limit=50, lease_seconds=30.0)
        assert len(claimed.jobs) >= 50
        assert any(job.batch_key for job in claimed.jobs)
        loose = [job for job in claimed.jobs if job.batch_key is None]
        await outbox.fix_batches(conn, [(job.lease, "batch-new") for job in loose])
        settled = await outbox.settle(
            conn, [outbox.Settlement(job.lease, "delivered") for job in claimed.jobs]
        )
        assert len(settled) == len(claimed.jobs)
    indexes = await index_tables(conn)
    found = await plans(conn, conn.stop_recording(), "webhook_outbox")
    scans = {str(plan): plan.scans_of("webhook_outbox", indexes) for plan in found}
    assert scans
    assert {plan: how for plan, how in scans.items() if "Seq Scan" in how} == {}
    # The other models' jobs of a claimed tick are looked up per tick, not by a walk of
    # every pending job's index entry (under load thousands are pending, in flight).
    for plan in found:
        how = plan.scans_of("webhook_outbox", indexes)
        assert "Index Scan webhook_outbox_pending_tick (whole index)" not in how, str(plan)
    # The batch mates of a claim are found through the batch index.
    claims = [plan for plan in found if "batch_mates" in plan.sql]
    assert {p.kind for p in claims} == {"custom", "generic"}
    for plan in claims:
        how = plan.scans_of("webhook_outbox", indexes)
        assert any(way.endswith(" webhook_outbox_batch") for way in how), str(plan)


async def test_a_models_dead_jobs_and_failed_attempts_are_found_through_the_partial_indexes(
    conn: RecordingConnection,
) -> None:
    """Migration 0024: the model-id GIN indexes hold only dead/waiting jobs and failed
    attempts (a delivered job or attempt adds nothing to them); the operator reads that
    look for those by model still use them."""
    await conn.execute(
        """
        UPDATE webhook_outbox SET status = 'dead', active_model_ids = '{7}'
        WHERE id % 1000 = 1;
        INSERT INTO webhook_attempts (outbox_id, attempt, target_url, active_model_ids,
                                      model_ids, status_code, outcome, attempted_at)
        SELECT id, 1, target_url, active_model_ids, model_ids,
               CASE WHEN status = 'dead' THEN 500 ELSE 200 END,
               CASE WHEN status = 'dead' THEN 'dead' ELSE 'delivered' END,
               now() - make_interval(secs => 200000 - id)
        FROM webhook_outbox WHERE status <> 'pending';
        ANALYZE webhook_outbox;
        ANALYZE webhook_attempts;
        """
    )
    # 199 800 delivered jobs and attempts left nothing in the indexes (~4 MB each before 0024).
    sizes = await conn.fetchrow(
        "SELECT pg_relation_size('webhook_outbox_models') AS jobs,"
        " pg_relation_size('webhook_attempts_models') AS attempts"
    )
    assert (sizes["jobs"], sizes["attempts"]) < (65536, 65536), dict(sizes)
    conn.start_recording()
    total, dead = await outbox.list_dead(conn, limit=10, offset=0, active_model_id=7)
    status = await model_status(conn, 7)
    sent = conn.stop_recording()
    assert total == 200 and len(dead) == 10
    assert status.last_error is not None and status.last_error.outcome == "dead"
    indexes = await index_tables(conn)
    jobs = [p for p in await plans(conn, sent, "webhook_outbox") if p.kind == "custom"]
    counts = [p for p in jobs if "count(*)" in p.sql and "status = $2" in p.sql]
    assert counts and all(
        "Bitmap Index Scan webhook_outbox_models" in p.scans_of("webhook_outbox", indexes)
        for p in counts
    ), [str(p) for p in counts]
    errors = [
        p
        for p in await plans(conn, sent, "webhook_attempts")
        if p.kind == "custom" and "outcome <> 'delivered'" in p.sql
    ]
    assert errors and all(
        "Bitmap Index Scan webhook_attempts_models" in p.scans_of("webhook_attempts", indexes)
        for p in errors
    ), [str(p) for p in errors]


async def test_a_claim_planned_on_a_young_outbox_is_planned_again_once_it_grew(
    db_dsn: str,
) -> None:
    """A service started on an empty outbox plans its claim then, and PostgreSQL keeps a
    generic plan until the next ANALYZE: one made on a nearly empty table leases the
    claimed rows by reading all of it (the bench's pipeline: ~5 000 pages per claim).
    The claim is planned again every period, so the plan in use once the outbox grew
    was made on the grown outbox."""
    conn = await recording_connection(db_dsn)
    try:
        # As PostgreSQL does after five runs: the generic plan, made on the empty outbox.
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await outbox.claim_due(conn, limit=20, lease_seconds=30.0, replan_seconds=0.5)
        started = time.monotonic() // 0.5
        await conn.execute(
            """
            INSERT INTO webhook_outbox (idempotency_key, target_url, coin_id, data_timestamp,
                active_model_ids, model_ids, payload, status)
            SELECT 'key-' || g, 'https://n8n.example/webhook/pump', 'Coin' || (g % 2000),
                   now() - make_interval(secs => 50000 - g), '{1}', '{41}',
                   '{"timestamp": "t", "predictions": [],
                     "metadata": {"alerts_count": 0, "version": "v"}}'::jsonb,
                   CASE WHEN g % 100 = 0 THEN 'pending' ELSE 'delivered' END
            FROM generate_series(1, 50000) AS g
            """
        )
        await wait_for(lambda: time.monotonic() // 0.5 > started, what="the next period")
        claimed = await outbox.claim_due(conn, limit=20, lease_seconds=30.0, replan_seconds=0.5)
        assert len(claimed.jobs) == 20
        # The plan of the claim statement prepared last (asyncpg's, as it ran).
        name = await conn.fetchval(
            "SELECT name FROM pg_prepared_statements WHERE statement LIKE $1"
            " ORDER BY prepare_time DESC LIMIT 1",
            "%WITH due AS%locked_until = clock_timestamp()%",
        )
        tree = await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE {name}(20, '{{}}', 30.0)")
        document = (tree if isinstance(tree, list) else json.loads(tree))[0]
        plan = Plan(outbox.claim_sql(time.monotonic()), "generic", document["Plan"])
        indexes = await index_tables(conn)
        assert "Seq Scan" not in plan.scans_of("webhook_outbox", indexes), str(plan)
    finally:
        await conn.close()
