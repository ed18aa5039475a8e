"""Two `serve` processes against one database split the coin shards; kill -9 of one
moves its shards to the other with no tick lost and none predicted twice.

Real processes (`python -m actors.app.cli serve`), real PostgreSQL, real models, a real
webhook receiver. Every coin gets its ticks in one INSERT, so its newest tick is the
one predicted (ticks of a coin within a batch coalesce, latest wins): each such
tick must be POSTed, under exactly one Idempotency-Key.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import asyncpg
from coin_rows import coin_rows, insert_rows
from metrics_reader import metrics_text, sample_value
from ports import free_port
from waiting import wait_for
from webhook_receiver import WebhookReceiver, add_trained_models

from storage.db.pool import connect

REPO = Path(__file__).resolve().parents[2]
FEATURES = ["price_close", "volume_sol", "buy_pressure_ratio", "num_buys", "price_roc_5"]


class Replica:
    """One `pump-predictor serve` process on the shared database."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.env = {**os.environ, **env, "API_HOST": "127.0.0.1", "API_PORT": str(self.port)}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "actors.app.cli", "serve", "--no-dashboard", "--no-demo"],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def shards(self) -> dict[str, Any] | None:
        assert self.process is not None
        assert self.process.poll() is None, self.log_path.read_text()[-3000:]
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{self.port}/api/shards") as resp,
            ):
                return dict(await resp.json()) if resp.status == 200 else None
        except aiohttp.ClientError:
            return None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


async def held(conn: asyncpg.Connection) -> Counter[str]:
    rows = await conn.fetch(
        "SELECT holder FROM shard_leases WHERE holder IS NOT NULL AND expires_at > now()"
    )
    return Counter(r["holder"] for r in rows)


async def test_two_replicas_split_the_shards_and_a_killed_one_loses_no_tick(
    db_dsn: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    conn = await connect(db_dsn)
    env = {
        "DB_DSN": db_dsn,
        "MODEL_STORAGE_PATH": str(tmp_path / "models"),
        "N8N_WEBHOOK_URL": receiver.url(),
        "N8N_WEBHOOK_TIMEOUT": "2",  # a dead replica's claimed jobs are free after 14 s
        "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "SHARD_LEASE_SECONDS": "2",
        "BATCH_TIMEOUT_SECONDS": "0.02",
        "POLLING_INTERVAL_SECONDS": "0.2",
        "SHUTDOWN_DEADLINE_SECONDS": "5",
        "LOG_FORMAT": "json",
    }
    replicas = [Replica(env, tmp_path / f"replica{i}.log") for i in range(2)]
    start = datetime.now(UTC) - timedelta(seconds=900)
    expected: set[tuple[str, str]] = set()
    try:
        await add_trained_models(conn, tmp_path, 801, FEATURES)
        for replica in replicas:
            replica.start()

        async def split() -> dict[str, int] | None:
            counts = await held(conn)
            ok = sorted(counts.values()) == [32, 32]
            return dict(counts) if ok and all([await r.shards() for r in replicas]) else None

        holders = await wait_for(split, timeout=90, interval=0.3, what="an even split")
        views = [await r.shards() for r in replicas]
        survivor, victim = replicas
        victim_holder = views[1]["this_holder"] if views[1] else None
        assert victim_holder in holders
        for step in range(24):
            rows = [
                r
                for i in range(15)
                for r in coin_rows(
                    f"s{step}c{i}", 3, start=start + timedelta(seconds=20 * step), seed=step
                )
            ]
            await insert_rows(conn, rows)
            newest: dict[str, datetime] = {}
            for r in rows:
                newest[r["mint"]] = max(newest.get(r["mint"], r["timestamp"]), r["timestamp"])
            expected |= {(c, t.isoformat()) for c, t in newest.items()}
            if step == 8:
                victim.kill()  # kill -9: no release, its leases must expire
            await anyio.sleep(0.15)

        async def all_held_by_survivor() -> bool:
            counts = await held(conn)
            return len(counts) == 1 and sum(counts.values()) == 64

        await wait_for(all_held_by_survivor, timeout=20, what="the survivor holding every shard")

        async def all_posted() -> bool:
            got = {(b["coin_id"], b["timestamp"]) for b in receiver.bodies()}
            return expected <= got

        await wait_for(all_posted, timeout=60, interval=0.2, what="every tick posted")
        view = await survivor.shards()
        assert view is not None and view["unheld"] == 0
    finally:
        for replica in replicas:
            replica.stop()
        await conn.close()
    keys: dict[tuple[str, str], set[str]] = defaultdict(set)
    for hit in receiver.received():
        body = hit.body
        keys[(body["coin_id"], body["timestamp"])].add(hit.headers["Idempotency-Key"])
    twice = {tick: k for tick, k in keys.items() if len(k) > 1}
    assert not twice, f"ticks predicted and queued twice: {twice}"


async def _housekeeping(replica: Replica) -> tuple[float, float]:
    """(pp_role_held of housekeeping, predictions this process evaluated) from its /metrics."""
    text = await metrics_text(f"http://127.0.0.1:{replica.port}")
    return (
        sample_value(text, "pp_role_held", role="housekeeping"),
        sample_value(text, "pp_evaluations_total"),
    )


async def _counted(replica: Replica, evaluations: int) -> bool:
    """The replica holds the role and its metrics count the evaluations (recorded just
    after the page's commit)."""
    held, evaluated = await _housekeeping(replica)
    return held == 1 and evaluated >= evaluations


async def _keeper(conn: asyncpg.Connection) -> str | None:
    holder: str | None = await conn.fetchval(
        "SELECT holder FROM role_leases WHERE role = 'housekeeping' AND expires_at > now()"
    )
    return holder


async def _insert_due_ticks(conn: asyncpg.Connection, prefix: str) -> set[tuple[str, datetime]]:
    """Ticks 15 minutes old: their 5-minute windows are closed, due as soon as predicted."""
    start = datetime.now(UTC) - timedelta(seconds=900)
    rows = [r for i in range(8) for r in coin_rows(f"{prefix}{i}", 3, start=start, seed=i)]
    await insert_rows(conn, rows)
    newest: dict[str, datetime] = {}
    for r in rows:
        newest[r["mint"]] = max(newest.get(r["mint"], r["timestamp"]), r["timestamp"])
    return set(newest.items())


async def _evaluated(conn: asyncpg.Connection, ticks: set[tuple[str, datetime]]) -> bool:
    """Every tick predicted by both models, and nothing left in the evaluator's queue."""
    rows = await conn.fetch(
        "SELECT coin_id, data_timestamp FROM predictions"
        " WHERE evaluation_result IS NOT NULL GROUP BY 1, 2 HAVING count(*) = 2"
    )
    judged = {(r["coin_id"], r["data_timestamp"]) for r in rows}
    return ticks <= judged and not await conn.fetchval("SELECT count(*) FROM prediction_due")


async def test_housekeeping_runs_in_one_replica_and_moves_on_sigterm_and_kill(
    db_dsn: str, tmp_path: Path
) -> None:
    """The evaluator and retention run in the one replica holding the housekeeping lease;
    SIGTERM releases it at once, kill -9 lets it expire, and the other replica takes it
    over and evaluates the ticks that fall due."""
    conn = await connect(db_dsn)
    env = {
        "DB_DSN": db_dsn,
        "MODEL_STORAGE_PATH": str(tmp_path / "models"),
        "SHARD_LEASE_SECONDS": "2",
        "BATCH_TIMEOUT_SECONDS": "0.02",
        "POLLING_INTERVAL_SECONDS": "0.2",
        "EVALUATION_INTERVAL_SECONDS": "0.2",
        "SHUTDOWN_DEADLINE_SECONDS": "5",
        "LOG_FORMAT": "json",
    }
    replicas = [Replica(env, tmp_path / f"replica{i}.log") for i in range(2)]
    try:
        await add_trained_models(conn, tmp_path, 811, FEATURES)
        for replica in replicas:
            replica.start()
        views = await wait_for(
            lambda: _all_views(replicas), timeout=90, interval=0.3, what="both replicas up"
        )
        by_holder = {v["this_holder"]: r for v, r in zip(views, replicas, strict=True)}
        keeper = by_holder[await wait_for(lambda: _keeper(conn), what="a housekeeping holder")]
        other = next(r for r in replicas if r is not keeper)
        assert [v["roles"][0]["holder"] for v in views] == [await _keeper(conn)] * 2

        ticks = await _insert_due_ticks(conn, "first")
        await wait_for(lambda: _evaluated(conn, ticks), timeout=30, what="the ticks evaluated")
        await wait_for(lambda: _counted(keeper, 2 * len(ticks)), what="the holder's count")
        assert await _housekeeping(other) == (0, 0)  # it predicted, but evaluated nothing

        # SIGTERM: the role is released at once (not left to expire) and taken over.
        keeper.stop()
        released = [e for e in _events(keeper.log_path) if e.get("event") == "role_released"]
        assert released and released[-1]["released"] is True

        async def other_holds() -> bool:
            return (await _housekeeping(other))[0] == 1

        await wait_for(other_holds, timeout=10, what="the other taking over")
        keeper.start()  # back as the one without the role

        # kill -9 of the holder: its lease expires, then the restarted replica takes it.
        other.kill()

        async def restarted_holds() -> bool:
            view = await keeper.shards()
            return view is not None and await _keeper(conn) == view["this_holder"]

        await wait_for(restarted_holds, timeout=60, interval=0.3, what="the takeover")
        ticks = await _insert_due_ticks(conn, "second")
        await wait_for(lambda: _evaluated(conn, ticks), timeout=30, what="evaluated after it")
        await wait_for(lambda: _counted(keeper, 2 * len(ticks)), what="the new holder's count")
    finally:
        for replica in replicas:
            replica.stop()
        await conn.close()


async def _all_views(replicas: list[Replica]) -> list[dict[str, Any]] | None:
    views = [await r.shards() for r in replicas]
    return [v for v in views if v is not None] if all(views) else None


def _events(path: Path) -> list[dict[str, Any]]:
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events
