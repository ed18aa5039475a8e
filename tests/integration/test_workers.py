"""`serve --workers 2`: two worker processes under one supervisor split the shards,
models added later reach both, /metrics merges them, and a worker killed with
SIGKILL is started again and gets its shards back, with no tick lost or doubled.

A real supervisor process and real workers, real PostgreSQL, models, receiver.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import anyio
import asyncpg
from coin_rows import coin_rows, insert_rows
from ports import free_port
from waiting import wait_for
from webhook_receiver import WebhookReceiver, add_trained_models

from storage.db.pool import connect

REPO = Path(__file__).resolve().parents[2]
FEATURES = ["price_close", "volume_sol", "buy_pressure_ratio", "num_buys", "price_roc_5"]


async def holders(conn: asyncpg.Connection) -> dict[int, int]:
    """pid -> shards held, of the live holders."""
    rows = await conn.fetch(
        """
        SELECT h.pid, count(l.shard) AS held FROM shard_holders h
        LEFT JOIN shard_leases l ON l.holder = h.holder AND l.expires_at > now()
        WHERE h.expires_at > now() GROUP BY h.pid
        """
    )
    return {int(r["pid"]): int(r["held"]) for r in rows}


async def metrics_text(port: int) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        return await resp.text()


def start_serve(env: dict[str, str], log_path: Path, *args: str) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "actors.app.cli", "serve", "--no-dashboard", "--no-demo", *args],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def test_two_workers_split_the_shards_and_a_killed_worker_comes_back(
    db_dsn: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    conn = await connect(db_dsn)
    port = free_port()
    env = {
        **os.environ,
        "DB_DSN": db_dsn,
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
        "MODEL_STORAGE_PATH": str(tmp_path / "models"),
        "N8N_WEBHOOK_URL": receiver.url(),
        "N8N_WEBHOOK_TIMEOUT": "2",
        "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "SHARD_LEASE_SECONDS": "2",
        "BATCH_TIMEOUT_SECONDS": "0.02",
        "POLLING_INTERVAL_SECONDS": "0.2",
        "SHUTDOWN_DEADLINE_SECONDS": "5",
        "LOG_FORMAT": "json",
    }
    log_path = tmp_path / "serve.log"
    start = datetime.now(UTC) - timedelta(seconds=900)
    expected: set[tuple[str, str]] = set()
    supervisor = start_serve(env, log_path, "--workers", "2")

    async def split() -> dict[int, int] | None:
        assert supervisor.poll() is None, log_path.read_text()[-3000:]
        held = await holders(conn)
        return held if sorted(held.values()) == [32, 32] else None

    async def insert_step(step: int) -> None:
        rows = [
            r
            for i in range(12)
            for r in coin_rows(f"w{step}c{i}", 3, start=start + timedelta(seconds=20 * step))
        ]
        await insert_rows(conn, rows)
        newest: dict[str, datetime] = {}
        for r in rows:
            newest[r["mint"]] = max(newest.get(r["mint"], r["timestamp"]), r["timestamp"])
        expected.update((c, t.isoformat()) for c, t in newest.items())

    async def all_posted_by_both_models() -> bool:
        got = {(b["coin_id"], b["timestamp"]) for b in receiver.bodies()}
        return expected <= got

    try:
        first = await wait_for(split, timeout=90, interval=0.3, what="two workers, 32 each")
        assert supervisor.pid not in first, "the supervisor holds shards itself"
        # Models added while running: the change reaches every worker (NOTIFY).
        await add_trained_models(conn, tmp_path, 811, FEATURES)
        await anyio.sleep(0.5)
        for step in range(6):
            await insert_step(step)
            await anyio.sleep(0.1)
        await wait_for(all_posted_by_both_models, timeout=60, what="ticks of both workers")
        text = await metrics_text(port)
        assert 'pp_shards_held{worker="0"} 32' in text and 'pp_shards_held{worker="1"} 32' in text
        victim = sorted(first)[0]
        os.kill(victim, signal.SIGKILL)
        for step in range(6, 18):
            await insert_step(step)
            await anyio.sleep(0.15)

        async def back_to_two() -> dict[int, int] | None:
            held = await split()
            return held if held is not None and victim not in held else None

        await wait_for(back_to_two, timeout=60, interval=0.3, what="a new worker, 32 each")
        await wait_for(all_posted_by_both_models, timeout=60, what="every tick after the kill")
        assert "pp_worker_restarts_total" in await metrics_text(port)
    finally:
        supervisor.send_signal(signal.SIGTERM)
        try:
            code = supervisor.wait(30)
        except subprocess.TimeoutExpired:
            supervisor.kill()
            code = supervisor.wait(10)
        try:
            still_held = await conn.fetchval(
                "SELECT count(*) FROM shard_leases WHERE holder IS NOT NULL AND expires_at > now()"
            )
        finally:
            await conn.close()
    assert code == 0, log_path.read_text()[-3000:]
    assert still_held == 0, "a worker kept its shards after the stop"
    keys: dict[tuple[str, str], set[str]] = defaultdict(set)
    models_per_post: Counter[int] = Counter()
    for hit in receiver.received():
        keys[(hit.body["coin_id"], hit.body["timestamp"])].add(hit.headers["Idempotency-Key"])
        models_per_post[len(hit.body["predictions"])] += 1
    assert not {t: k for t, k in keys.items() if len(k) > 1}, "a tick was queued twice"
    assert set(models_per_post) == {2}, models_per_post  # both models in every worker
