"""A database outage as the operator sees it: the real CLI in a subprocess.

pg_terminate_backend and a PostgreSQL restart are expected events: every
stderr line stays JSON under LOG_FORMAT=json, the actors say "waiting for the
database" with a reason (no crash tracebacks), and /health is back as soon as
the database is.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import asyncpg
import pytest
from ports import free_port
from waiting import wait_for

from storage.db.embedded import EmbeddedPostgres
from storage.db.migrate import apply_migrations

REPO = Path(__file__).resolve().parents[2]


def _health(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


async def _status(port: int, wanted: int) -> bool:
    import anyio

    return await anyio.to_thread.run_sync(_health, port) == wanted


async def _prepare(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        # What the collector and the Training Service own in production.
        await apply_migrations(conn, embedded=True)
    finally:
        await conn.close()


async def _terminate_backends(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await conn.close()


@pytest.mark.timeout(180)
async def test_database_outages_are_one_line_json_warnings_and_health_recovers(
    tmp_path: Path,
) -> None:
    import anyio

    server = EmbeddedPostgres(tmp_path / "pg")
    dsn = await anyio.to_thread.run_sync(server.start)
    await _prepare(dsn)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DB_", "API_"))},
        "DB_DSN": dsn,
        "API_PORT": str(port),
        "API_HOST": "127.0.0.1",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "MODEL_STORAGE_PATH": str(tmp_path / "models"),
        "SHUTDOWN_DEADLINE_SECONDS": "5",
        "HEALTH_MAX_LAG_SECONDS": "100000",
    }
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, read after it ends
        [sys.executable, "-m", "actors.app.cli", "serve", "--no-dashboard", "--no-demo"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        await wait_for(lambda: _status(port, 200), timeout=60, interval=0.2, what="healthy")
        # 1. Every connection of ours killed by the server.
        assert await _terminate_backends(dsn) > 0
        await wait_for(lambda: _status(port, 200), timeout=10, interval=0.1, what="healthy")
        # 2. PostgreSQL stopped, then started again.
        await anyio.to_thread.run_sync(server.stop)
        await wait_for(lambda: _status(port, 503), timeout=10, interval=0.1, what="degraded")
        await anyio.sleep(1.5)  # down long enough for actors to fail and retry
        dsn = await anyio.to_thread.run_sync(server.start)
        back = time.monotonic()
        # Within a second of the database, plus slack for a loaded CI machine; the
        # old crash back-off and the actors' failing-grace took 10 s and more.
        await wait_for(lambda: _status(port, 200), timeout=4, interval=0.05, what="healthy")
        recovered_in = time.monotonic() - back
        proc.send_signal(signal.SIGTERM)
        _, stderr = await anyio.to_thread.run_sync(lambda: proc.communicate(timeout=30))
    finally:
        if proc.poll() is None:
            proc.kill()
        await anyio.to_thread.run_sync(server.stop)
    assert proc.returncode == 0, stderr
    events = []
    for line in stderr.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line under LOG_FORMAT=json: {line!r}")
    names = [e["event"] for e in events]
    assert "actor_crashed" not in names, [e for e in events if e["event"] == "actor_crashed"]
    waits = [e for e in events if e["event"] == "actor_waiting_for_database"]
    assert waits, names
    assert {e["reason"] for e in waits} <= {
        "database unavailable",
        "connection terminated by the server",
    }
    assert all(e["level"] == "warning" and "exception" not in e for e in waits)
    assert recovered_in < 4
