"""Migration 0027 turns the outbox payload from jsonb into json (stored as written, out
of line): jobs queued before it are still claimed, sent, shown and swept as before,
and a job queued after it is read back byte for byte as it was written.

The schema before 0027 is built from the real migration files without it; the jobs
are written with plain SQL into the jsonb column as the old code left them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from actors.webhooks.payload import payload_json, snapshot_reference
from storage.db.migrate import MIGRATIONS_DIR, apply_migrations
from storage.db.pool import connect
from storage.outbox import jobs as outbox
from storage.outbox.jobs import ModelSnapshot, OutboxJob
from storage.outbox.retention import delete_unreferenced_snapshots

URL = "https://hooks.example.com/webhook/alerts"
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _before_0027(tmp_path: Path) -> Path:
    """The migration files as they were before 0027 (the embedded set included)."""
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    for later in directory.glob("002[7-9]_*.sql"):
        later.unlink()
    return directory


def _snapshot(name: str) -> ModelSnapshot:
    text = json.dumps({"id": 1, "name": name, "features": ["price_close"]})
    return ModelSnapshot(hashlib.sha256(text.encode()).hexdigest(), text)


def _items(*pairs: tuple[ModelSnapshot, float]) -> str:
    return ",".join(
        f'{{"prediction":{int(p >= 0.5)},"probability":{p!r}'
        f',"is_alert":{"true" if p >= 0.7 else "false"}'
        f',"alert_threshold":0.7,"tag":"{"alert" if p >= 0.7 else "negative"}"'
        f',"model":{snapshot_reference(s.key)}}}'
        for s, p in pairs
    )


async def _old_job(
    conn: asyncpg.Connection, key: str, coin: str, items: str, count: int, status: str
) -> int:
    payload = payload_json(
        coin, T0.isoformat(), items, total_predictions=count, alerts_count=1, version="0.9"
    )
    job_id: int = await conn.fetchval(
        """
        INSERT INTO webhook_outbox (idempotency_key, target_url, coin_id, data_timestamp,
                                    active_model_ids, model_ids, payload, status)
        VALUES ($1, $2, $3, $4, '{1,2}', '{10,20}', $5::text::jsonb, $6) RETURNING id
        """,
        key,
        URL,
        coin,
        T0,
        payload,
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
    a, b, unused = _snapshot("A"), _snapshot("B"), _snapshot("unused")
    old = T0 - timedelta(days=2)
    await conn.executemany(
        "INSERT INTO webhook_model_snapshots (key, model_json, created_at) VALUES ($1, $2, $3)",
        [(s.key, s.json, old) for s in (a, b, unused)],
    )
    pending_items = _items((a, 0.75), (b, 0.25))
    pending = await _old_job(conn, "k-pending", "CoinP", pending_items, 2, "pending")
    await _old_job(conn, "k-sent", "CoinD", _items((b, 0.9)), 1, "delivered")

    assert "0027" in await apply_migrations(conn, embedded=True)

    claim = await outbox.claim_due(conn, limit=10, lease_seconds=30)
    assert [j.id for j in claim.jobs] == [pending]
    job = claim.jobs[0]
    # The old rows went through jsonb: the same items, keys in jsonb's order.
    assert json.loads(f"[{job.items_json}]") == json.loads(f"[{pending_items}]")
    assert (job.item_count, job.alerts_count, job.timestamp, job.version) == (
        2,
        1,
        T0.isoformat(),
        "0.9",
    )

    # The API's view: each snapshot reference replaced by its model.
    row = await outbox.get_job(conn, pending)
    assert row is not None
    assert [item["model"]["name"] for item in row.payload["predictions"]] == ["A", "B"]

    # A snapshot a job (pending or delivered) still refers to stays; the other goes.
    deleted = await delete_unreferenced_snapshots(conn, cutoff=T0, limit=10)
    assert deleted == 1
    left = {r["key"] for r in await conn.fetch("SELECT key FROM webhook_model_snapshots")}
    assert left == {a.key, b.key}


async def test_a_job_queued_after_the_upgrade_reads_back_as_written(
    conn: asyncpg.Connection,
) -> None:
    await apply_migrations(conn, embedded=True)
    snapshot = _snapshot("A")
    items = _items((snapshot, 0.5512683987617493))
    job = OutboxJob(
        idempotency_key="k-new",
        target_url=URL,
        coin_id="CoinN",
        data_timestamp=T0,
        active_model_ids=(1,),
        model_ids=(10,),
        payload=payload_json(
            "CoinN", T0.isoformat(), items, total_predictions=1, alerts_count=0, version="1.0"
        ),
        snapshots=(snapshot,),
    )
    assert await outbox.enqueue(conn, [job]) == 1
    claim = await outbox.claim_due(conn, limit=10, lease_seconds=30)
    assert [j.items_json for j in claim.jobs] == [items]
    assert await conn.fetchval("SELECT payload::text FROM webhook_outbox") == job.payload
    # Not JSON: refused by the column, as jsonb refused it.
    with pytest.raises(asyncpg.InvalidTextRepresentationError):
        await outbox.enqueue(conn, [OutboxJob("k-bad", URL, "CoinX", T0, (1,), (10,), "{oops")])
