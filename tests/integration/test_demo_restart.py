"""The demo across restarts of one embedded data directory.

The stand-in n8n keeps its port (webhook jobs queued before a restart still
reach it), and a plain `--no-demo` start deactivates the demo models instead of
letting them predict real rows and alert a stand-in that no longer runs.
"""

from __future__ import annotations

import socket
from pathlib import Path

import anyio
import asyncpg
from webhook_receiver import insert_active_model

from actors.app.demo import DemoRecord, DemoWebhookSink, retire_demo_models
from storage.config import Settings


async def _sink_url(record: DemoRecord) -> str | None:
    sink = DemoWebhookSink(record)
    async with anyio.create_task_group() as tg:
        await tg.start(sink.run)
        tg.cancel_scope.cancel()
    return sink.url


async def test_the_stand_in_n8n_keeps_its_port_across_restarts(tmp_path: Path) -> None:
    record = DemoRecord(tmp_path / "pgdata" / "demo.json")
    first = await _sink_url(record)
    assert first is not None and record.n8n_port() is not None
    assert await _sink_url(record) == first
    # Taken by another program meanwhile: another port, recorded for the next start.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", record.n8n_port() or 0))
        holder.listen()
        moved = await _sink_url(record)
    assert moved != first and await _sink_url(record) == moved


async def test_a_plain_start_deactivates_the_demo_models_of_its_data_directory(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    embedded = settings.replace(db_dsn="", embedded_data_dir=str(tmp_path / "pgdata"))
    async with pool.acquire() as conn:
        demo_ids = [await insert_active_model(conn, i) for i in (1, 2)]
        real = await insert_active_model(conn, 42)
    record = DemoRecord.for_settings(embedded)
    assert record is not None
    record.update(active_model_ids=demo_ids, n8n_port=1234)
    assert sorted(await retire_demo_models(embedded, pool)) == sorted(demo_ids)
    rows = await pool.fetch("SELECT id, is_active FROM active_models")
    assert {r["id"]: r["is_active"] for r in rows} == {
        demo_ids[0]: False,
        demo_ids[1]: False,
        real: True,
    }
    # Said once: a second plain start finds nothing left to deactivate.
    assert await retire_demo_models(embedded, pool) == []
    # With DB_DSN the data directory's demo file says nothing about that database.
    assert await retire_demo_models(settings, pool) == []
