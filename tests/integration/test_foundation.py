"""The foundation as a user meets it: migrations, config errors, shutdown, restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import anyio
import asyncpg
import pytest
from metrics_reader import metrics_text
from ports import free_port
from waiting import wait_for

from actors.app.service import Service
from actors.runtime.supervisor import ActorSpec
from storage.config import Settings
from storage.db.migrate import apply_migrations, discover

REPO = Path(__file__).resolve().parents[2]


async def test_migrations_apply_once_and_are_idempotent_across_restarts(empty_db_dsn: str) -> None:
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        first = await apply_migrations(conn, embedded=True)
        second = await apply_migrations(conn, embedded=True)
        recorded = await conn.fetchval("SELECT count(*) FROM schema_migrations")
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
    finally:
        await conn.close()
    assert first == [m.version for m in discover(embedded=True)]
    assert second == []
    assert recorded == len(first)
    assert {
        "coin_metrics",
        "ml_models",
        "active_models",
        "prediction_ticks",
        "webhook_outbox",
    } <= tables


async def test_two_processes_migrating_at_once_apply_each_migration_once(empty_db_dsn: str) -> None:
    conns = [await asyncpg.connect(empty_db_dsn) for _ in range(2)]
    results: list[list[str]] = []

    async def run(conn: asyncpg.Connection) -> None:
        results.append(await apply_migrations(conn, embedded=True))

    try:
        async with anyio.create_task_group() as tg:
            for conn in conns:
                tg.start_soon(run, conn)
        rows = await conns[0].fetch("SELECT version FROM schema_migrations ORDER BY version")
    finally:
        for conn in conns:
            await conn.close()
    applied = sorted(v for r in results for v in r)
    assert applied == sorted(m.version for m in discover(embedded=True))
    assert sorted(r["version"] for r in rows) == applied


async def test_external_database_never_gets_foreign_tables(empty_db_dsn: str) -> None:
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        # The collector owns coin_metrics in production: create it as it would.
        await conn.execute(
            "CREATE TABLE coin_metrics (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " mint varchar(64) NOT NULL, timestamp timestamptz NOT NULL)"
        )
        await apply_migrations(conn, embedded=False)
        has_ml_models = await conn.fetchval("SELECT to_regclass('ml_models') IS NOT NULL")
        has_predictions = await conn.fetchval("SELECT to_regclass('predictions') IS NOT NULL")
    finally:
        await conn.close()
    assert not has_ml_models
    assert has_predictions


def _run_cli(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "actors.app.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def test_bad_config_value_stops_startup_naming_the_key() -> None:
    result = _run_cli("serve", env={"BATCH_SIZE": "lots"}, timeout=30)
    assert result.returncode == 2
    assert "BATCH_SIZE" in result.stderr
    assert "'lots'" in result.stderr


def test_unknown_config_key_stops_startup_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text((REPO / "config.toml").read_text() + "\n[extra]\nbatch_sise = 3\n")
    result = _run_cli("--config", str(config), "migrate", env={}, timeout=30)
    assert result.returncode == 2
    assert "batch_sise" in result.stderr
    assert "unknown" in result.stderr


def test_sigterm_stops_the_service_within_the_deadline_with_clean_db_shutdown(
    tmp_path: Path,
) -> None:
    port = free_port()
    data_dir = tmp_path / "pgdata"
    env = {
        "API_PORT": str(port),
        "API_HOST": "127.0.0.1",
        "EMBEDDED_DATA_DIR": str(data_dir),
        "DB_DSN": "",
        "SHUTDOWN_DEADLINE_SECONDS": "5",
        "LOG_FORMAT": "json",
        "MODEL_STORAGE_PATH": str(tmp_path / "models"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "actors.app.cli", "serve", "--no-dashboard"],
        env={**os.environ, **env},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        healthy = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                import urllib.request

                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
                    healthy = resp.status == 200
                    if healthy:
                        break
            except OSError:
                time.sleep(0.2)
        assert healthy, "service did not become healthy"
        stopped_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
        took = time.monotonic() - stopped_at
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    # Drain deadline (5 s) plus the embedded server's own clean stop.
    assert took < 15, f"shutdown took {took:.1f}s"
    assert "shutdown_finished" in output
    assert "embedded_postgres_stopped" in output
    assert not (data_dir / "postmaster.pid").exists(), "PostgreSQL was not stopped cleanly"


class _Crasher:
    """An actor that becomes ready and then fails, every time."""

    starts = 0

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        type(self).starts += 1
        task_status.started()
        await anyio.sleep(0.01)
        raise RuntimeError("boom")


async def test_crashing_actor_is_restarted_and_health_keeps_answering(settings: Settings) -> None:
    service = Service(settings)
    service.supervisor.backoff_initial = 0.01
    service.supervisor.backoff_max = 0.05
    async with anyio.create_task_group() as tg:
        await tg.start(service.run)
        await service.supervisor.spawn(ActorSpec("crasher", _Crasher))
        await wait_for(
            lambda: service.state.actor_restarts.get("crasher", 0) >= 3,
            what="three restarts of the crashing actor",
        )
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{service.web_port}/health") as resp:
                body = await resp.json()
                assert resp.status == 200, body
        text = await metrics_text(f"http://127.0.0.1:{service.web_port}")
        assert body["checks"]["actor_restarts"]["crasher"] >= 3
        assert 'pp_actor_restarts_total{actor="crasher"}' in text
        assert _Crasher.starts >= 3
        await service.shutdown()
    assert service.supervisor.actor_names == []


@pytest.mark.parametrize("path", ["/health", "/metrics", "/api/config"])
async def test_system_routes_answer(settings: Settings, path: str) -> None:
    service = Service(settings.replace(api_token="s3cret-token"))
    async with anyio.create_task_group() as tg:
        await tg.start(service.run)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{service.web_port}{path}") as resp:
                text = await resp.text()
                assert resp.status == 200, text
        await service.shutdown()
        tg.cancel_scope.cancel()
    assert "s3cret-token" not in text
