"""Migration 0027 turns the outbox payload from jsonb into json (stored as written):
jobs queued before it are still claimed, sent, shown and swept as before,
and a job queued after it is read back byte for byte as it was written.

The schema before 0027 is built from the real migration files without it; the jobs
are written with plain SQL into the jsonb column as the old code left them.

Migration 0028 (item tails): a job queued before it, its items holding model
references, is sent exactly as a job queued after it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from waiting import wait_for
from webhook_receiver import (
    WebhookReceiver,
    insert_active_model,
    load_webhook_model,
    model_reference_form,
    quick_dispatcher,
    running,
)

from actors.webhooks.payload import (
    ReportedPrediction,
    WebhookModel,
    build_payload,
    model_snapshot,
    tag_for,
    tick_jobs,
    webhook_items,
)
from storage.db.migrate import MIGRATIONS_DIR, apply_migrations
from storage.db.pool import connect, create_pool
from storage.outbox import jobs as outbox
from storage.outbox.jobs import ModelSnapshot, OutboxJob
from storage.outbox.retention import delete_unreferenced_snapshots

URL = "https://hooks.example.com/webhook/alerts"
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _before_0027(tmp_path: Path) -> Path:
    """The migration files as they were before 0027 (the embedded set included)."""
    return _migrations_before(tmp_path, 27)


def _migrations_before(tmp_path: Path, version: int) -> Path:
    """The migration files older than `version` (the embedded set included)."""
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    for migration in directory.glob("[0-9][0-9][0-9][0-9]_*.sql"):
        if int(migration.name[:4]) >= version:
            migration.unlink()
    return directory


def _predictions(
    coin: str, *scores: tuple[WebhookModel, float]
) -> list[tuple[WebhookModel, ReportedPrediction]]:
    return [
        (model, ReportedPrediction(coin, T0, int(p >= 0.5), p, tag_for(p, 0.7), 0.7))
        for model, p in scores
    ]


def _job(coin: str, *scores: tuple[WebhookModel, float], url: str = URL) -> OutboxJob:
    """The coin tick's job as the batcher builds it (items refer to item tails)."""
    items = [
        item
        for model, prediction in _predictions(coin, *scores)
        for item in webhook_items(model, [prediction], default_url=url)
    ]
    (job,) = tick_jobs(items)
    return job


async def _old_snapshots(conn: asyncpg.Connection, snapshots: Iterable[ModelSnapshot]) -> None:
    await conn.executemany(
        "INSERT INTO webhook_model_snapshots (key, model_json, created_at) VALUES ($1, $2, $3)"
        " ON CONFLICT (key) DO NOTHING",
        [(s.key, s.json, T0 - timedelta(days=2)) for s in snapshots],
    )


async def _old_job(conn: asyncpg.Connection, job: OutboxJob, status: str) -> int:
    """`job` and its snapshots as the code before 0027 left them (payload jsonb)."""
    await _old_snapshots(conn, job.snapshots)
    job_id: int = await conn.fetchval(
        """
        INSERT INTO webhook_outbox (idempotency_key, target_url, coin_id, data_timestamp,
                                    active_model_ids, model_ids, payload, status)
        VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8) RETURNING id
        """,
        job.idempotency_key,
        job.target_url,
        job.coin_id,
        job.data_timestamp,
        list(job.active_model_ids),
        list(job.model_ids),
        job.payload,
        status,
    )
    return job_id


@pytest.fixture
async def conn(empty_db_dsn: str, tmp_path: Path) -> asyncpg.Connection:
    conn = await connect(empty_db_dsn)
    await apply_migrations(conn, embedded=True, directory=_before_0027(tmp_path))
    assert (
        await conn.fetchval(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 'webhook_outbox'::regclass AND attname = 'payload'"
        )
        == "jsonb"
    )
    yield conn
    await conn.close()


async def test_jobs_queued_before_the_upgrade_are_claimed_shown_and_swept(
    conn: asyncpg.Connection,
) -> None:
    a, b, unused = [
        await load_webhook_model(conn, await insert_active_model(conn, 11 + k, name=name))
        for k, name in enumerate(("A", "B", "unused"))
    ]
    # As the code before 0027 wrote them: models as references (no item tails yet).
    pending = model_reference_form(_job("CoinP", (a, 0.75), (b, 0.25)))
    pending_id = await _old_job(conn, pending, "pending")
    await _old_job(conn, model_reference_form(_job("CoinD", (b, 0.9))), "delivered")
    await _old_snapshots(conn, [model_snapshot(unused)])  # no job refers to it

    assert "0027" in await apply_migrations(conn, embedded=True)

    claim = await outbox.claim_due(conn, limit=10, lease_seconds=30)
    assert [j.id for j in claim.jobs] == [pending_id]
    job = claim.jobs[0]
    # The old rows went through jsonb: the same items, keys in jsonb's order.
    assert json.loads(f"[{job.items_json}]") == json.loads(f"[{pending.items_json}]")
    assert (job.item_count, job.alerts_count, job.timestamp, job.version) == (
        2,
        1,
        pending.timestamp,
        pending.version,
    )

    # The API's view: each snapshot reference replaced by its model.
    row = await outbox.get_job(conn, pending_id)
    assert row is not None
    assert [item["model"]["name"] for item in row.payload["predictions"]] == ["A", "B"]

    # A snapshot a job (pending or delivered) still refers to stays; the other goes.
    deleted = await delete_unreferenced_snapshots(conn, cutoff=T0, limit=10)
    assert deleted == 1
    left = {r["key"] for r in await conn.fetch("SELECT key FROM webhook_model_snapshots")}
    assert left == {s.key for s in pending.snapshots}


async def test_a_job_queued_after_the_upgrade_reads_back_as_written(
    conn: asyncpg.Connection,
) -> None:
    await apply_migrations(conn, embedded=True)
    model = await load_webhook_model(conn, await insert_active_model(conn, 11))
    job = _job("CoinN", (model, 0.5512683987617493))
    assert await outbox.enqueue(conn, [job]) == 1
    claim = await outbox.claim_due(conn, limit=10, lease_seconds=30)
    assert [j.items_json for j in claim.jobs] == [job.items_json]
    assert await conn.fetchval("SELECT payload::text FROM webhook_outbox") == job.payload
    # Not JSON: refused by the column, as jsonb refused it.
    with pytest.raises(asyncpg.InvalidTextRepresentationError):
        await outbox.enqueue(conn, [OutboxJob("k-bad", URL, "CoinX", T0, (1,), (10,), "{oops")])


async def test_a_job_queued_before_item_tails_is_sent_as_one_queued_after(
    empty_db_dsn: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    """A pending job written before migration 0028 (its items hold model references) and
    one written after (items refer to tails): a dispatcher sends each with every item
    as CONTRACTS.md section 4 has it, the models in full."""
    url = receiver.url("/hook")
    conn = await connect(empty_db_dsn)
    try:
        await apply_migrations(conn, embedded=True, directory=_migrations_before(tmp_path, 28))
        a, b = [
            await load_webhook_model(conn, await insert_active_model(conn, 11 + k, name=name))
            for k, name in enumerate(("A", "B"))
        ]
        scores = ((a, 0.75), (b, 0.25))
        old = model_reference_form(_job("CoinOld", *scores, url=url))
        assert '"tail"' not in old.payload and await outbox.enqueue(conn, [old]) == 1
        assert "0028" in await apply_migrations(conn, embedded=True)
        new = _job("CoinNew", *scores, url=url)
        assert '"tail"' in new.payload and await outbox.enqueue(conn, [new]) == 1
    finally:
        await conn.close()
    pool = await create_pool(empty_db_dsn, min_size=1, max_size=3)
    try:
        async with running(quick_dispatcher(pool)):
            await wait_for(lambda: len(receiver.bodies()) == 2, what="both jobs sent")
    finally:
        await pool.close()
    sent = {body["coin_id"]: body for body in receiver.bodies()}
    for coin in ("CoinOld", "CoinNew"):
        expected = build_payload(coin, T0, _predictions(coin, *scores))
        assert sent[coin]["predictions"] == expected["predictions"]
        assert [p["model"]["features"] for p in sent[coin]["predictions"]] == [
            list(a.features),
            list(b.features),
        ]
