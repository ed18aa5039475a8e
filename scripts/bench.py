"""Benchmarks of the running service: intake, predictions, the whole pipeline.

    python scripts/bench.py intake   --rate 1000 --seconds 20 --coins 2000 [--json]
    python scripts/bench.py predict  --models 10 --coins 2000 --rate 1000 --seconds 20 [--json]
    python scripts/bench.py pipeline --coins 2000 --rate 1000 --models 10 --seconds 20 [--json]
    python scripts/bench.py pipeline ... --find-max --p99-bound-ms 1000
    python scripts/bench.py webhooks --ticks 3000 --models 10 [--json]

Everything runs on this machine: a fresh embedded PostgreSQL in a temporary
directory (never `var/pgdata`), or, when DB_DSN is set, a scratch database
`pp_bench_<random>` created on that server and dropped afterwards. The row
generator is a separate process (so it does not share an event loop with what
it measures) that writes small multi-row INSERTs as a collector does and
records when each row was sent. `predict` and `pipeline` run the service as a
subprocess (`python -m actors.app.cli serve --no-dashboard`) and measure its CPU
and memory with psutil. With `--json` the last line printed is one JSON object.
See docs/benchmarks.md for the method and the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

if __package__ in (None, ""):  # run as `python scripts/bench.py`: make `scripts.` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio
import asyncpg
import numpy as np

from storage.config import REPO_ROOT, Settings, load_settings
from storage.intake.coin_metrics import INSERT_SQL

TRIGGER = "pump_predictor_notify"  # storage/db/migrations/0003_coin_metrics_notify.sql


def ts_us(moment: datetime) -> int:
    """A timestamp as integer microseconds since the epoch: an exact dictionary key."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def pct(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values), q)) if len(values) else None


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000.0, 2)


# --------------------------------------------------------------------------- generated rows


class CoinWalk:
    """Plausible coin_metrics rows for a fixed set of coins (a random walk per coin)."""

    def __init__(self, mints: Sequence[str], seed: int) -> None:
        self.mints = list(mints)
        self.rng = np.random.default_rng(seed)
        self.price = 3e-8 * np.exp(self.rng.normal(0, 0.3, len(self.mints)))
        self.index = {m: i for i, m in enumerate(self.mints)}
        self.last: dict[str, int] = {}

    def columns(self, mints: Sequence[str], stamps: Sequence[datetime]) -> list[list[Any]]:
        """Column arrays (COLLECTOR_COLUMNS order) for one row per (mint, timestamp)."""
        n, rng = len(mints), self.rng
        idx = np.fromiter((self.index[m] for m in mints), dtype=np.int64, count=n)
        opened = self.price[idx]
        closed = np.maximum(opened * np.exp(rng.normal(0.001, 0.05, n)), 1e-10)
        self.price[idx] = closed
        high = np.maximum(opened, closed) * (1 + np.abs(rng.normal(0, 0.01, n)))
        low = np.minimum(opened, closed) * 0.99
        buys = rng.integers(0, 30, n)
        sells = rng.integers(0, 20, n)
        bv, sv = rng.gamma(2, 0.5, n), rng.gamma(2, 0.4, n)
        wallets = buys + sells // 2
        trades = np.maximum(buys + sells, 1)
        cols: dict[str, Any] = {
            "mint": list(mints),
            "timestamp": list(stamps),
            "phase_id_at_time": [1] * n,
            "price_open": opened,
            "price_high": high,
            "price_low": low,
            "price_close": closed,
            "market_cap_close": closed * 1e9,
            "bonding_curve_pct": rng.uniform(5, 95, n),
            "virtual_sol_reserves": rng.uniform(30, 100, n),
            "is_koth": (rng.random(n) < 0.05).tolist(),
            "volume_sol": bv + sv,
            "buy_volume_sol": bv,
            "sell_volume_sol": sv,
            "net_volume_sol": bv - sv,
            "num_buys": buys,
            "num_sells": sells,
            "unique_wallets": wallets,
            "num_micro_trades": rng.integers(0, 5, n),
            "max_single_buy_sol": bv / np.maximum(buys, 1) * 2,
            "max_single_sell_sol": sv / np.maximum(sells, 1) * 2,
            "whale_buy_volume_sol": bv * 0.2,
            "whale_sell_volume_sol": sv * 0.1,
            "num_whale_buys": rng.integers(0, 3, n),
            "num_whale_sells": rng.integers(0, 2, n),
            "dev_sold_amount": np.where(rng.random(n) < 0.03, rng.random(n), 0.0),
            "volatility_pct": np.abs(rng.normal(5, 2, n)),
            "avg_trade_size_sol": (bv + sv) / trades,
            "buy_pressure_ratio": bv / (bv + sv),
            "unique_signer_ratio": rng.uniform(0.3, 1.0, n),
        }
        return [v.tolist() if isinstance(v, np.ndarray) else v for v in cols.values()]

    def stamp(self, mint: str, moment: datetime) -> datetime:
        """`moment`, or 1 µs after the coin's previous row: timestamps strictly increase."""
        us = max(ts_us(moment), self.last.get(mint, 0) + 1)
        self.last[mint] = us
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def coin_names(n: int, prefix: str = "bench") -> list[str]:
    return [f"{prefix}{i:05d}pump" for i in range(n)]


async def seed_history(
    dsn: str, mints: Sequence[str], rows_per_coin: int, *, end: datetime, step_s: float = 5.0
) -> int:
    """Older rows per coin so that windowed features have history from the first live tick."""
    walk = CoinWalk(mints, seed=7)
    conn = await asyncpg.connect(dsn)
    try:
        pending: list[tuple[str, datetime]] = []
        total = 0
        for i in range(rows_per_coin):
            moment = end - timedelta(seconds=step_s * (rows_per_coin - i))
            pending += [(m, walk.stamp(m, moment)) for m in mints]
            while len(pending) >= 2000 or (i == rows_per_coin - 1 and pending):
                chunk, pending = pending[:2000], pending[2000:]
                await conn.fetch(INSERT_SQL, *walk.columns(*zip(*chunk, strict=True)))
                total += len(chunk)
        return total
    finally:
        await conn.close()


@dataclass(slots=True)
class GeneratorResult:
    rows: list[tuple[str, int, int, float]]  # (mint, ts_us, row id, sent at: time.time())
    statements: int
    seconds: float
    max_slip_s: float  # how far behind its schedule the generator ever was
    # Its connections' server processes: their CPU is the collector's, not the service's,
    # and is left out of the step's PostgreSQL CPU (`CpuMeter.seconds`).
    backend_pids: list[int] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return len(self.rows) / self.seconds if self.seconds > 0 else 0.0


async def generate(
    dsn: str,
    mints: Sequence[str],
    *,
    rate: float,
    seconds: float,
    rows_per_statement: int,
    seed: int,
    concurrency: int = 4,
) -> GeneratorResult:
    """Insert `rate` rows/s for `seconds`, coins round robin, `rows_per_statement` per INSERT.

    A statement's rows are timed just before it is sent (so insert latency
    counts against us). At most `concurrency` statements are in flight, as
    several collector workers would have; when the database is slower than
    the schedule the generator falls behind and says by how much.
    """
    walk = CoinWalk(mints, seed)
    k = max(1, min(rows_per_statement, len(mints)))
    interval = k / rate
    rows: list[tuple[str, int, int, float]] = []
    backend_pids: list[int] = []

    async def remember(conn: asyncpg.Connection) -> None:
        backend_pids.append(conn.get_server_pid())

    pool = await asyncpg.create_pool(dsn, min_size=concurrency, max_size=concurrency, init=remember)
    slots = anyio.Semaphore(concurrency)
    next_coin = 0
    statements = 0
    max_slip = 0.0

    async def insert(batch: list[tuple[str, datetime]]) -> None:
        try:
            columns = walk.columns([m for m, _ in batch], [t for _, t in batch])
            sent = time.time()
            records = await pool.fetch(INSERT_SQL, *columns)
            rows.extend(
                (m, ts_us(t), int(r["id"]), sent) for (m, t), r in zip(batch, records, strict=True)
            )
        finally:
            slots.release()

    try:
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            while True:
                due = started + statements * interval
                if due - started >= seconds:
                    break
                delay = due - time.perf_counter()
                if delay > 0:
                    await anyio.sleep(delay)
                await slots.acquire()
                max_slip = max(max_slip, time.perf_counter() - due)
                now = datetime.now(UTC)
                batch = []
                for _ in range(k):
                    mint = mints[next_coin % len(mints)]
                    next_coin += 1
                    batch.append((mint, walk.stamp(mint, now)))
                tg.start_soon(insert, batch)
                statements += 1
        elapsed = time.perf_counter() - started
    finally:
        await pool.close()
    return GeneratorResult(rows, statements, elapsed, max_slip, backend_pids)


def _generator_process(conn: Any, kwargs: dict[str, Any]) -> None:
    dsn, mints = kwargs.pop("dsn"), kwargs.pop("mints")
    result = anyio.run(lambda: generate(dsn, mints, **kwargs))
    conn.send(result)
    conn.close()


async def generate_in_child(dsn: str, mints: Sequence[str], **kwargs: Any) -> GeneratorResult:
    """Run `generate` in its own process: it must not share an event loop (or a GIL) with
    the service or the receivers it is measuring."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe(duplex=False)
    process = context.Process(
        target=_generator_process, args=(child, {"dsn": dsn, "mints": list(mints), **kwargs})
    )
    process.start()
    child.close()
    try:
        result: GeneratorResult = await anyio.to_thread.run_sync(parent.recv)
    finally:
        await anyio.to_thread.run_sync(process.join, 30)
        if process.is_alive():
            process.kill()
    return result


# --------------------------------------------------------------------------- the database


@dataclass(slots=True)
class BenchDatabase:
    dsn: str
    commit_times: bool  # track_commit_timestamp is on: exact commit times are readable
    # The server's data directory when it runs on this machine (the embedded one, or a
    # DB_DSN server whose postmaster.pid is readable): its processes' CPU is measured.
    data_dir: Path | None
    where: str
    # pg_stat_statements is loaded (a DB_DSN server with it in shared_preload_libraries):
    # each pipeline step reports its top statements per coin tick.
    statements: bool = False


async def _local_data_dir(conn: asyncpg.Connection) -> Path | None:
    """The DB_DSN server's data directory, if it runs here and we may read its pid file."""
    with contextlib.suppress(asyncpg.PostgresError):
        path = Path(await conn.fetchval("SHOW data_directory"))
        with contextlib.suppress(OSError):
            if (path / "postmaster.pid").is_file() and _postgres_processes(path):
                return path
    return None


async def _enable_statement_stats(conn: asyncpg.Connection) -> bool:
    """pg_stat_statements in the scratch database, if the server preloads it."""
    preload = await conn.fetchval("SHOW shared_preload_libraries")
    if "pg_stat_statements" not in preload:
        return False
    await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return True


async def reset_statement_stats(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_stat_statements_reset()")


async def statement_totals(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """This database's statements since the reset with their total time (execution and
    planning), the largest first; the last row sums all of them."""
    return await conn.fetch(
        """
        WITH s AS (
            SELECT regexp_replace(s.query, '\\s+', ' ', 'g') AS query, s.calls, s.rows,
                   s.total_exec_time + s.total_plan_time AS ms
            FROM pg_stat_statements s
            JOIN pg_database d ON d.oid = s.dbid AND d.datname = current_database()
        )
        (SELECT * FROM s ORDER BY ms DESC LIMIT 15)
        UNION ALL
        SELECT '(all statements)', sum(calls), sum(rows), coalesce(sum(ms), 0) FROM s
        """
    )


def per_tick_statements(rows: Sequence[asyncpg.Record], ticks: int) -> list[dict[str, Any]]:
    """Where PostgreSQL's statement time went, per coin tick."""
    per = max(ticks, 1)
    return [
        {
            "query": r["query"][:160],
            "calls_per_tick": round(float(r["calls"] or 0) / per, 4),
            "rows_per_tick": round(float(r["rows"] or 0) / per, 3),
            "ms_per_tick": round(float(r["ms"]) / per, 4),
        }
        for r in rows
    ]


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgres", "postgresql"):
        raise SystemExit("bench: DB_DSN must be a postgresql:// URL")
    return urlunsplit(parts._replace(path=f"/{name}"))


@asynccontextmanager
async def bench_database(settings: Settings, scratch: Path) -> AsyncIterator[BenchDatabase]:
    """A database of its own for one benchmark run, migrated as the embedded one is."""
    from storage.db.database import migrate

    if settings.db_dsn:
        name = f"pp_bench_{secrets.token_hex(4)}"
        admin = await asyncpg.connect(settings.db_dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        dsn = _with_database(settings.db_dsn, name)
        try:
            # A scratch database: it gets the collector's tables like the embedded one.
            await migrate(dsn, embedded=True)
            conn = await asyncpg.connect(dsn)
            on = await conn.fetchval("SHOW track_commit_timestamp") == "on"
            local_dir = await _local_data_dir(conn)
            statements = await _enable_statement_stats(conn)
            await conn.close()
            where = f"DB_DSN server, scratch database {name}"
            if statements:
                where += ", pg_stat_statements on"
            yield BenchDatabase(dsn, on, local_dir, where, statements)
        finally:
            admin = await asyncpg.connect(settings.db_dsn)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()
        return

    from storage.db.embedded import EmbeddedPostgres

    data_dir = scratch / "pgdata"
    server = EmbeddedPostgres(data_dir)
    dsn = await anyio.to_thread.run_sync(server.start)
    try:
        # Exact commit times of predictions need this; it takes a restart to apply.
        conn = await asyncpg.connect(dsn)
        await conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
        await conn.close()
        await anyio.to_thread.run_sync(server.stop)
        dsn = await anyio.to_thread.run_sync(server.start)
        await migrate(dsn, embedded=True)
        yield BenchDatabase(dsn, True, data_dir, f"embedded PostgreSQL in {data_dir}")
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(server.stop)


def _postgres_processes(data_dir: Path | None) -> list[Any]:
    import psutil

    if data_dir is None:
        return []
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        main = psutil.Process(pid)
        return [main, *main.children(recursive=True)]
    except (OSError, ValueError, psutil.Error):
        return []


def _cpu_of(processes: Sequence[Any]) -> dict[int, float]:
    import psutil

    seen: dict[int, float] = {}
    for p in processes:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            seen[p.pid] = t.user + t.system
    return seen


class CpuMeter:
    """CPU seconds of a set of processes between two moments (PostgreSQL backends come
    and go: each is counted from its first sighting)."""

    def __init__(self, find: Any) -> None:
        self._find = find
        self._start: dict[int, float] = {}
        self._last: dict[int, float] = {}

    def start(self) -> None:
        self._start = _cpu_of(self._find())
        self._last = dict(self._start)

    def sample(self) -> None:
        self._last.update(_cpu_of(self._find()))

    def seconds(self, exclude: Sequence[int] = ()) -> float:
        """CPU seconds since `start`, without the processes `exclude` names."""
        self.sample()
        left_out = set(exclude)
        return sum(
            v - self._start.get(pid, 0.0) for pid, v in self._last.items() if pid not in left_out
        )


class SampledCpuMeter(CpuMeter):
    """A CpuMeter sampled every 0.1 s by a thread until read: a backend or autovacuum
    worker that exits before the end still counts for what it used while sampled."""

    def start(self) -> None:
        import threading

        super().start()
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.sample()

    def seconds(self, exclude: Sequence[int] = ()) -> float:
        self._stop.set()
        return super().seconds(exclude)


def _started_meter(data_dir: Path | None) -> SampledCpuMeter:
    """PostgreSQL's CPU from now on."""
    meter = SampledCpuMeter(lambda: _postgres_processes(data_dir))
    meter.start()
    return meter


# --------------------------------------------------------------------------- models


BASE_FEATURES = (
    "price_close",
    "market_cap_close",
    "bonding_curve_pct",
    "volume_sol",
    "net_volume_sol",
    "num_buys",
    "num_sells",
    "unique_wallets",
    "buy_pressure_ratio",
    "volatility_pct",
)
WINDOWS = (5, 10, 15)


def model_features(seed: int, count: int = 40) -> list[str]:
    """10 base columns and 30 engineered features (windows 5/10/15) the engine computes."""
    from features.engineering import engineered_names

    engineered = engineered_names(WINDOWS)
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(len(engineered), count - len(BASE_FEATURES), replace=False))
    return [*BASE_FEATURES, *(engineered[i] for i in picked)]


def train_models(count: int, out_dir: Path) -> list[dict[str, Any]]:
    """`count` models, XGBoost and RandomForest alternating, trained on generated data the
    way the Training Service fits them (a pandas frame, so `feature_names_in_` is set, and
    n_jobs left at None, which XGBoost reads as every core)."""
    import joblib
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier
    from xgboost import XGBClassifier

    out_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    models = []
    for i in range(count):
        model_id = 100 + i
        kind = "xgboost" if i % 2 == 0 else "random_forest"
        features = model_features(seed=model_id)
        rng = np.random.default_rng(model_id)
        x = rng.normal(size=(2000, len(features)))
        score = x @ rng.normal(size=len(features)) + rng.normal(scale=0.5, size=2000)
        y = (score > np.median(score)).astype(np.int64)
        estimator: Any
        if kind == "xgboost":
            estimator = XGBClassifier(n_estimators=100, max_depth=6, random_state=i)
        else:
            estimator = RandomForestClassifier(n_estimators=100, max_depth=10, random_state=i)
        estimator.fit(pd.DataFrame(x, columns=features), y)
        path = out_dir / f"model_{model_id}_{kind}.pkl"
        joblib.dump(estimator, path)
        time_based = {
            "enabled": True,
            "future_minutes": 10,
            "min_percent_change": 5.0,
            "direction": "up",
        }
        models.append(
            {
                "id": model_id,
                "name": f"bench {kind} {model_id}",
                "model_type": kind,
                "status": "READY",
                "created_at": now,
                "updated_at": now,
                "is_deleted": False,
                "target_variable": "price_close",
                "target_operator": None,
                "target_value": None,
                "features": features,
                "phases": None,
                "params": {
                    "use_engineered_features": True,
                    "feature_engineering_windows": list(WINDOWS),
                    "_time_based": time_based,
                },
                "model_file_path": str(path),
                "description": "benchmark model trained on generated data",
                "future_minutes": 10,
                "price_change_percent": 5.0,
                "target_direction": "up",
                "training_accuracy": 0.5,
                "cv_scores": [],
            }
        )
    return models


# --------------------------------------------------------------------------- webhook receiver


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(slots=True)
class HookReceiver:
    """n8n's stand-in on 127.0.0.1: records when each (coin, tick, model) arrived."""

    port: int = 0
    arrived: dict[tuple[str, int, int], float] = field(default_factory=dict)
    items: Counter[tuple[str, int, int]] = field(default_factory=Counter)
    keys: Counter[str] = field(default_factory=Counter)
    posts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: Any) -> Any:
        from aiohttp import web

        body = await request.json()
        at = time.time()
        self.posts += 1
        self.keys[request.headers.get("Idempotency-Key", "")] += 1
        # WEBHOOK_BATCH_MAX_TICKS > 1: an array of one-tick bodies.
        for tick in body if isinstance(body, list) else [body]:
            stamp = ts_us(datetime.fromisoformat(tick["timestamp"]))
            for item in tick.get("predictions", []):
                key = (tick["coin_id"], stamp, int(item["model"]["active_model_id"]))
                self.items[key] += 1
                self.arrived.setdefault(key, at)
        return web.json_response({"ok": True})

    @asynccontextmanager
    async def running(self) -> AsyncIterator[HookReceiver]:
        from aiohttp import web

        self.port = free_port()
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        try:
            yield self
        finally:
            await runner.cleanup()


# --------------------------------------------------------------------------- the service


class ServiceProcess:
    """`python -m actors.app.cli serve --no-dashboard` with the benchmark's configuration."""

    def __init__(self, env: dict[str, str], log_path: Path, args: Sequence[str] = ()) -> None:
        self.args = list(args)
        self.port = free_port()
        self.env = {**os.environ, **env, "API_HOST": "127.0.0.1", "API_PORT": str(self.port)}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        import aiohttp

        timeout = 60.0
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: ASYNC220 (returns at once)
                [sys.executable, "-m", "actors.app.cli", "serve", "--no-dashboard", *self.args],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the service exited; see {self.log_path}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{self.api}/health") as response:
                        if response.status in (200, 503):
                            return
                await anyio.sleep(0.2)
        raise RuntimeError(f"the service did not answer /health in {timeout:.0f} s")

    def processes(self) -> list[Any]:
        """This service and its worker processes (`--workers N`), while they run."""
        import psutil

        if self.process is None or self.process.poll() is not None:
            return []
        try:
            main = psutil.Process(self.pid)
            return [main, *main.children(recursive=True)]
        except psutil.Error:
            return []

    def peak_rss_mb(self) -> float | None:
        """VmHWM: the highest resident set size of the service process so far."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
        except OSError:
            pass
        return None

    async def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await anyio.to_thread.run_sync(self.process.wait, 30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            await anyio.to_thread.run_sync(self.process.wait)


async def intake_done(conn: asyncpg.Connection) -> int:
    """The coin_metrics id up to which every shard's rows are processed (the lowest
    shard cursor: each shard has its own, moved by whichever process holds it)."""
    value = await conn.fetchval(
        "SELECT min(last_id) FROM intake_cursor WHERE name LIKE 'coin_metrics/%'"
    )
    return int(value or 0)


class _ServiceCpu:
    """CPU seconds of every service process (replicas, their workers; a killed one
    counts for what it used until it was last seen), read like psutil's cpu_times."""

    def __init__(self, services: Sequence[ServiceProcess]) -> None:
        import threading

        self._meter = CpuMeter(lambda: [p for s in services for p in s.processes()])
        self._meter.start()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(0.2)
            self._meter.sample()

    def cpu_times(self) -> tuple[float, float]:
        return (self._meter.seconds(), 0.0)


async def all_metric_sums(services: Sequence[ServiceProcess]) -> dict[str, float]:
    """metric_sums over every running service (a supervisor's /metrics has its workers'
    merged in); a killed replica's counters are gone with it."""
    sums: dict[str, float] = {}
    for service in services:
        if service.process is None or service.process.poll() is not None:
            continue
        for name, value in (await metric_sums(service.api)).items():
            sums[name] = sums.get(name, 0.0) + value
    return sums


async def metric_sums(api: str) -> dict[str, float]:
    """`name` -> value summed over labels, from the service's /metrics."""
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(f"{api}/metrics") as response:
        text = await response.text()
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        with contextlib.suppress(ValueError):
            sums[name] = sums.get(name, 0.0) + float(value)
    return sums


async def import_models(api: str, model_ids: Sequence[int]) -> None:
    """Through the real import route, as a user would."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        for model_id in model_ids:
            async with session.post(
                f"{api}/api/models/import", json={"model_id": model_id}
            ) as response:
                if response.status != 201:
                    raise RuntimeError(
                        f"import of model {model_id}: HTTP {response.status} "
                        f"{await response.text()}"
                    )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (await metric_sums(api)).get("pp_active_models", 0) >= len(model_ids):
                return
            await anyio.sleep(0.2)
    raise RuntimeError("the predictors of the imported models did not start within 60 s")


# --------------------------------------------------------------------------- pipeline runs


@dataclass(slots=True)
class StepResult:
    rate: float
    rows_inserted: int
    insert_rate: float
    max_slip_s: float
    rows_processed: int
    unpredicted: int
    lost: int
    duplicated: int
    latencies: list[float]
    webhook_latencies: list[float]
    webhooks_expected: int
    drain_s: float | None
    backlog_rows_at_stop: int
    cursor_reached_max: bool
    seconds: float
    cpu_s: float
    db_cpu_s: float | None
    bench_cpu_s: float
    metric_delta: dict[str, float]
    ticks: list[tuple[str, int]] = field(default_factory=list)  # processed, in insert order
    ticks_stored: int = 0  # coin ticks with a stored prediction (of any model)
    store_bytes: int | None = None  # growth of the prediction tables, after evaluation
    evaluation: dict[str, Any] | None = None
    # Webhook jobs received more than once under the same Idempotency-Key (a dispatcher
    # killed after its POST and before recording it: the job is sent again, same key).
    resent_same_key: int = 0
    # pg_stat_statements over the step (DB_DSN server with it loaded), per coin tick.
    statements: list[Any] | None = None

    def per_tick_ms(self, seconds: float | None) -> float | None:
        if seconds is None or not self.rows_processed:
            return None
        return round(seconds * 1000 / self.rows_processed, 3)

    def summary(self) -> dict[str, Any]:
        lat, wh = self.latencies, self.webhook_latencies
        return {
            "rate": self.rate,
            "rows_inserted": self.rows_inserted,
            "insert_rows_per_s": round(self.insert_rate, 1),
            "generator_max_slip_ms": ms(self.max_slip_s),
            "rows_processed": self.rows_processed,
            "processed_rows_per_s": round(self.rows_processed / self.seconds, 1),
            "coalesced_rows": self.unpredicted,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "webhook_resent_same_key": self.resent_same_key,
            "p50_ms": ms(pct(lat, 50)),
            "p95_ms": ms(pct(lat, 95)),
            "p99_ms": ms(pct(lat, 99)),
            "max_ms": ms(max(lat) if lat else None),
            "webhook_p50_ms": ms(pct(wh, 50)),
            "webhook_p99_ms": ms(pct(wh, 99)),
            "webhook_ticks_delivered": len(wh),
            "webhook_ticks_expected": self.webhooks_expected,
            "intake_backlog_rows_at_stop": self.backlog_rows_at_stop,
            "cursor_reached_max": self.cursor_reached_max,
            "intake_drain_s": None if self.drain_s is None else round(self.drain_s, 3),
            "cpu_s": round(self.cpu_s, 2),
            "db_cpu_s": None if self.db_cpu_s is None else round(self.db_cpu_s, 2),
            "bench_cpu_s": round(self.bench_cpu_s, 2),
            # Per coin tick predicted by every model (issue 19's figures).
            "service_cpu_ms_per_tick": self.per_tick_ms(self.cpu_s),
            "pg_cpu_ms_per_tick": self.per_tick_ms(self.db_cpu_s),
            "disk_bytes_per_tick": (
                round(self.store_bytes / self.ticks_stored)
                if self.store_bytes is not None and self.ticks_stored
                else None
            ),
            "evaluation": self.evaluation,
            **({"statements": self.statements} if self.statements is not None else {}),
        }


# The tables that hold predictions and their outcomes: disk_bytes_per_tick is their
# growth (pg_total_relation_size: heap, TOAST and every index) per stored coin tick.
PREDICTION_TABLES = (
    "prediction_ticks",
    "prediction_targets",
    "tick_outcomes",
    "prediction_due",
    "prediction_verdicts",
)


# Every stored prediction's coin tick with its model, from the tick rows themselves: the
# commit time of a prediction is its tick row's (the view has no xmin).
_TICK_MODELS = (
    "FROM prediction_ticks t, unnest(t.target_ids) AS x(target_id) "
    "JOIN prediction_targets g ON g.id = x.target_id"
)


def _commit_time(commit_times: bool) -> str:
    return (
        "coalesce(pg_xact_commit_timestamp(t.xmin), t.predicted_at)"
        if commit_times
        else "t.predicted_at"
    )


async def prediction_store_bytes(conn: asyncpg.Connection) -> int:
    """Bytes of the prediction tables with their indexes (those that exist)."""
    value = await conn.fetchval(
        "SELECT coalesce(sum(pg_total_relation_size(to_regclass(t))), 0)::bigint"
        " FROM unnest($1::text[]) AS t WHERE to_regclass(t) IS NOT NULL",
        list(PREDICTION_TABLES),
    )
    return int(value)


async def evaluate_everything(conn: asyncpg.Connection, find_postgres: Any) -> dict[str, Any]:
    """Evaluate every pending prediction now, with the evaluator's own statements.

    The step's ticks are seconds old and their windows minutes long, so they are
    made due with a negative grace (outcomes from incomplete price paths: the
    figure is the cost of writing outcomes, not their value). Reports the
    evaluator's cost per evaluated prediction and the pages' PostgreSQL CPU.
    """
    from storage.predictions import evaluations

    db_cpu = CpuMeter(find_postgres)
    db_cpu.start()
    client0 = time.process_time()
    started = time.perf_counter()
    evaluated, pages = 0, 0
    while True:
        page = await evaluations.evaluate_due_page(conn, grace_seconds=-86400.0, limit=5000)
        pages += 1
        evaluated += len(page)
        if page.outcomes < 5000:
            break
    wall = time.perf_counter() - started
    client = time.process_time() - client0
    pg = db_cpu.seconds()
    return {
        "predictions": evaluated,
        "pages": pages,
        "wall_s": round(wall, 3),
        "pg_cpu_s": round(pg, 3),
        "client_cpu_s": round(client, 3),
    }


class Pipeline:
    """The service subprocess with imported models, a database, a receiver: runs steps."""

    def __init__(
        self,
        db: BenchDatabase,
        services: list[ServiceProcess],
        receiver: HookReceiver | None,
        mints: list[str],
        model_count: int,
        rows_per_statement: int,
    ) -> None:
        self.db = db
        self.services = services
        self.service = services[0]
        self.receiver = receiver
        self.mints = mints
        self.model_count = model_count
        self.rows_per_statement = rows_per_statement
        self.proc = _ServiceCpu(services)
        self.seed = 1
        self.active_ids: list[int] = []

    async def cursor(self, conn: asyncpg.Connection) -> int:
        return await intake_done(conn)

    async def wait_cursor(self, conn: asyncpg.Connection, wanted: int, limit_s: float) -> bool:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if await self.cursor(conn) >= wanted:
                return True
            await anyio.sleep(0.02)
        return False

    async def wait_outbox(self, conn: asyncpg.Connection, limit_s: float) -> None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            # EXISTS, not count(*), and not too often: the bench must not load the
            # database it measures.
            pending = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM webhook_outbox WHERE status = 'pending')"
            )
            if not pending:
                return
            await anyio.sleep(0.5)

    async def step(self, rate: float, seconds: float, *, settle_timeout: float = 60) -> StepResult:
        """Insert at `rate` for `seconds`, wait until the service caught up, check the DB."""
        self.seed += 1
        conn = await asyncpg.connect(self.db.dsn)
        try:
            self.active_ids = [
                int(r["id"])
                for r in await conn.fetch("SELECT id FROM active_models WHERE is_active")
            ]
            db_cpu = CpuMeter(lambda: _postgres_processes(self.db.data_dir))
            db_cpu.start()
            await evaluate_everything(conn, lambda: [])  # earlier steps' leftovers
            store0 = await prediction_store_bytes(conn)
            cpu0 = sum(self.proc.cpu_times()[:2])
            bench0 = time.process_time()
            metrics0 = await all_metric_sums(self.services)
            if self.db.statements:
                await reset_statement_stats(conn)
            started = time.time()
            gen = await generate_in_child(
                self.db.dsn,
                self.mints,
                rate=rate,
                seconds=seconds,
                rows_per_statement=self.rows_per_statement,
                seed=self.seed,
            )
            stopped = time.time()
            max_id = max((r[2] for r in gen.rows), default=0)
            backlog = max(0, max_id - await self.cursor(conn))
            caught_up = await self.wait_cursor(conn, max_id, settle_timeout)
            drain = time.time() - stopped if caught_up else None
            if self.receiver is not None:
                await self.wait_outbox(conn, 30)
            cpu = sum(self.proc.cpu_times()[:2]) - cpu0
            # The generator's backends have usually exited by now (then never sampled);
            # one still exiting would count its whole life: left out either way.
            db_seconds = (
                db_cpu.seconds(exclude=gen.backend_pids) if self.db.data_dir is not None else None
            )
            bench_cpu = time.process_time() - bench0
            metric_delta = {
                k: v - metrics0.get(k, 0.0)
                for k, v in (await all_metric_sums(self.services)).items()
            }
            statements = await statement_totals(conn) if self.db.statements else None
            result = await self._check(
                conn, gen, rate, started, stopped, drain, backlog, caught_up, cpu, db_seconds,
                bench_cpu, metric_delta,
            )  # fmt: skip
            if statements is not None:
                result.statements = per_tick_statements(statements, result.rows_processed)
            evaluation = await evaluate_everything(
                conn, lambda: _postgres_processes(self.db.data_dir)
            )
            ticks = result.ticks_stored
            if ticks:
                evaluation["ticks"] = ticks
                for name in ("wall_s", "pg_cpu_s", "client_cpu_s"):
                    key = name.removesuffix("_s") + "_ms_per_tick"
                    evaluation[key] = round(evaluation[name] * 1000 / ticks, 4)
                if self.db.data_dir is None:
                    evaluation["pg_cpu_ms_per_tick"] = None
            result.evaluation = evaluation
            # Dead row versions the evaluator's UPDATEs left count too (until a VACUUM
            # makes their space reusable, which it does not give back).
            result.store_bytes = await prediction_store_bytes(conn) - store0
            return result
        finally:
            await conn.close()

    async def _check(
        self,
        conn: asyncpg.Connection,
        gen: GeneratorResult,
        rate: float,
        started: float,
        stopped: float,
        drain: float | None,
        backlog: int,
        caught_up: bool,
        cpu: float,
        db_cpu: float | None,
        bench_cpu: float,
        metric_delta: dict[str, float],
    ) -> StepResult:
        sent = {(m, t): at for m, t, _, at in gen.rows}
        first = datetime.fromtimestamp(started - 5, UTC)
        records = await conn.fetch(
            f"SELECT t.coin_id, t.data_timestamp, g.active_model_id, "
            f"{_commit_time(self.db.commit_times)} AS committed {_TICK_MODELS} "
            "WHERE t.data_timestamp >= $1",
            first,
        )
        done: dict[tuple[str, int], list[float]] = {}
        for r in records:
            key = (r["coin_id"], ts_us(r["data_timestamp"]))
            if key in sent:
                done.setdefault(key, []).append(r["committed"].timestamp())
        m = len(self.active_ids)
        latencies, ticks = [], []
        for mint, t, _, at in sorted(gen.rows, key=lambda r: r[2]):
            commits = done.get((mint, t), [])
            if len(commits) >= m:
                latencies.append(max(commits) - at)
                ticks.append((mint, t))
        newest: dict[str, int] = {}
        for mint, t in sent:
            newest[mint] = max(newest.get(mint, 0), t)
        lost = sum(1 for mint, t in newest.items() if len(done.get((mint, t), [])) < m)
        lost += 0 if caught_up else 1
        duplicated = int(
            await conn.fetchval(
                "SELECT count(*) FROM (SELECT 1 FROM predictions WHERE data_timestamp >= $1 "
                "GROUP BY active_model_id, coin_id, data_timestamp HAVING count(*) > 1) d",
                first,
            )
        )
        webhook_latencies: list[float] = []
        expected = resent = 0
        if self.receiver is not None:
            rec = self.receiver
            duplicated += sum(1 for c in rec.items.values() if c > 1)
            resent = sum(1 for c in rec.keys.values() if c > 1)
            duplicated += resent
            expected = len(ticks)
            for mint, t in ticks:
                arrivals = [rec.arrived.get((mint, t, a)) for a in self.active_ids]
                if all(a is not None for a in arrivals):
                    webhook_latencies.append(max(a for a in arrivals if a) - sent[(mint, t)])
        return StepResult(
            rate=rate,
            rows_inserted=len(gen.rows),
            insert_rate=gen.rate,
            max_slip_s=gen.max_slip_s,
            rows_processed=len(ticks),
            unpredicted=len(sent) - len(ticks),
            lost=lost,
            duplicated=duplicated,
            resent_same_key=resent,
            latencies=latencies,
            webhook_latencies=webhook_latencies,
            webhooks_expected=expected,
            drain_s=drain,
            backlog_rows_at_stop=backlog,
            cursor_reached_max=caught_up,
            seconds=stopped - started,
            cpu_s=cpu,
            db_cpu_s=db_cpu,
            bench_cpu_s=bench_cpu,
            metric_delta=metric_delta,
            ticks=ticks,
            ticks_stored=len(done),
        )

    async def burst(self, rows: int) -> dict[str, Any]:
        """Capacity: one row for each of `rows` coins, inserted at once (500 per statement);
        ticks predicted by every model per second, from the first insert to the last commit.
        One row per coin, so that the batcher has nothing to coalesce."""
        walk = CoinWalk(self.mints, seed=99)
        conn = await asyncpg.connect(self.db.dsn)
        try:
            now = datetime.now(UTC)
            rows = min(rows or len(self.mints), len(self.mints))
            batch = [(m, walk.stamp(m, now)) for m in self.mints[:rows]]
            columns = [
                walk.columns([m for m, _ in batch[o : o + 500]], [t for _, t in batch[o : o + 500]])
                for o in range(0, rows, 500)
            ]
            cpu0 = sum(self.proc.cpu_times()[:2])
            started = time.time()
            max_id = 0
            for chunk in columns:
                ids = await conn.fetch(INSERT_SQL, *chunk)
                max_id = max(max_id, *(int(r["id"]) for r in ids))
            inserted = time.time() - started
            caught_up = await self.wait_cursor(conn, max_id, 120)
            cpu = sum(self.proc.cpu_times()[:2]) - cpu0
            keys = {(m, ts_us(t)) for m, t in batch}
            records = await conn.fetch(
                f"SELECT t.coin_id, t.data_timestamp, "
                f"{_commit_time(self.db.commit_times)} AS committed {_TICK_MODELS} "
                "WHERE t.data_timestamp >= $1",
                now - timedelta(seconds=1),
            )
            per_tick: Counter[tuple[str, int]] = Counter()
            last = started
            for r in records:
                key = (r["coin_id"], ts_us(r["data_timestamp"]))
                if key in keys:
                    per_tick[key] += 1
                    last = max(last, r["committed"].timestamp())
            full = sum(1 for c in per_tick.values() if c >= self.model_count)
            seconds = last - started
            return {
                "rows": rows,
                "insert_s": round(inserted, 3),
                "caught_up": caught_up,
                "ticks_predicted": full,
                "seconds": round(seconds, 3),
                "ticks_per_s": round(full / seconds, 1) if seconds > 0 else None,
                "cpu_s": round(cpu, 2),
            }
        finally:
            await conn.close()


@asynccontextmanager
async def pipeline_setup(
    args: argparse.Namespace, *, webhooks: bool, scratch: Path, out: Any
) -> AsyncIterator[tuple[Pipeline, list[dict[str, Any]]]]:
    from scripts.demo_data import DemoTrainingService

    settings = load_settings()
    mints = coin_names(args.coins)
    async with bench_database(settings, scratch) as db:
        out(f"database: {db.where}")
        t0 = time.perf_counter()
        models = await anyio.to_thread.run_sync(train_models, args.models, scratch / "trained")
        out(f"trained {len(models)} models (40 features, windows 5/10/15) in "
            f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
        seeded = await seed_history(
            db.dsn, mints, args.history_rows, end=datetime.now(UTC) - timedelta(seconds=1)
        )
        out(f"seeded {seeded} history rows ({args.history_rows} per coin)")
        training = DemoTrainingService(models)
        receiver = HookReceiver() if webhooks else None
        async with anyio.create_task_group() as tg, contextlib.AsyncExitStack() as stack:
            await tg.start(training.run)
            if receiver is not None:
                await stack.enter_async_context(receiver.running())
            env = {
                "DB_DSN": db.dsn,
                "TRAINING_SERVICE_API_URL": training.base_url,
                "MODEL_STORAGE_PATH": str(scratch / "models"),
                "N8N_WEBHOOK_URL": receiver.url if receiver is not None else "",
                # The receiver is on 127.0.0.1, which the webhook target policy refuses
                # unless allowed (a bench is not demo mode).
                "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
                # The seeded history is older than now: not replayed at start.
                "CATCHUP_MAX_AGE_SECONDS": "0",
                "LOG_LEVEL": "WARNING",
                "LOG_FORMAT": "console",
                "API_TOKEN": "",
                "WEBHOOK_BATCH_MAX_TICKS": str(args.webhook_batch_ticks),
            }
            workers = ["--workers", str(args.workers)] if args.workers > 1 else []
            services = [
                ServiceProcess(env, scratch / f"service{i}.log", workers)
                for i in range(max(args.replicas, 1))
            ]
            try:
                for service in services:
                    await service.start()
                service = services[0]
                await import_models(service.api, [int(m["id"]) for m in models])
                out(f"service pid {service.pid}: {len(models)} models imported through "
                    "POST /api/models/import")  # fmt: skip
                if len(services) > 1 or args.workers > 1:
                    out(f"{len(services)} replica(s) x {args.workers} worker(s)")
                    await wait_shards_split(db.dsn, len(services) * args.workers)
                pipeline = Pipeline(db, services, receiver, mints, len(models), args.per_statement)
                yield pipeline, models
            finally:
                for service in services:
                    await service.stop()
                tg.cancel_scope.cancel()


async def wait_shards_split(dsn: str, holders: int, limit_s: float = 60.0) -> None:
    """Until `holders` processes hold every shard between them (their fair shares)."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            row = await conn.fetchrow(
                """
                SELECT count(DISTINCT holder) AS holders, count(holder) AS held,
                       (SELECT shard_count FROM shard_config) AS shards
                FROM shard_leases WHERE holder IS NOT NULL AND expires_at > now()
                """
            )
            if row["holders"] == holders and row["held"] == row["shards"]:
                return
            await anyio.sleep(0.2)
    finally:
        await conn.close()
    raise RuntimeError(f"the shards were not split between {holders} holders in {limit_s} s")


async def shard_claims(dsn: str) -> int:
    """Shard leases taken so far (every claim increments its shard's generation)."""
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT coalesce(sum(generation), 0) FROM shard_leases"))
    finally:
        await conn.close()


async def kill_one_worker(pipe: Pipeline, after_s: float, out: Any) -> dict[str, Any]:
    """SIGKILL one worker `after_s` seconds from now: a worker process of the first
    service with --workers, else the last replica."""
    import psutil

    await anyio.sleep(after_s)
    first = pipe.services[0]
    children = first.processes()[1:]
    if children:
        victim = children[0].pid
    elif len(pipe.services) > 1:
        victim = pipe.services[-1].pid
    else:
        out("--kill-worker-at: nothing to kill (one process: use --workers or --replicas)")
        return {"killed_pid": None}
    with contextlib.suppress(psutil.Error):
        psutil.Process(victim).kill()
    out(f"killed pid {victim} with SIGKILL {after_s:g} s into the run")
    return {"killed_pid": victim, "killed_after_s": after_s}


def _print_step(out: Any, label: str, s: dict[str, Any]) -> None:
    out(
        f"{label}: inserted {s['rows_inserted']} rows at {s['insert_rows_per_s']} rows/s "
        f"(asked {s['rate']}), processed {s['rows_processed']} "
        f"({s['processed_rows_per_s']} rows/s), coalesced {s['coalesced_rows']}, "
        f"lost {s['lost']}, duplicated {s['duplicated']}"
    )
    out(
        f"  insert->prediction committed p50 {s['p50_ms']} ms, p95 {s['p95_ms']} ms, "
        f"p99 {s['p99_ms']} ms, max {s['max_ms']} ms"
    )
    if s.get("webhook_ticks_expected"):
        out(
            f"  insert->webhook received p50 {s['webhook_p50_ms']} ms, p99 "
            f"{s['webhook_p99_ms']} ms ({s['webhook_ticks_delivered']}/"
            f"{s['webhook_ticks_expected']} ticks delivered for every model)"
        )
    out(
        f"  intake backlog at stop {s['intake_backlog_rows_at_stop']} rows, caught up "
        f"{s['intake_drain_s']} s after the last insert; CPU service {s['cpu_s']} s, "
        f"database {s['db_cpu_s']} s, generator+receiver (this process) {s['bench_cpu_s']} s "
        f"(+ the generator's own process)"
    )
    out(
        f"  per coin tick: service CPU {s['service_cpu_ms_per_tick']} ms, PostgreSQL CPU "
        f"{s['pg_cpu_ms_per_tick']} ms, prediction tables +{s['disk_bytes_per_tick']} bytes "
        f"after evaluation; evaluation {json.dumps(s['evaluation'])}"
    )


def _profile(delta: dict[str, float]) -> dict[str, Any]:
    """Where the service's time went, from its own histograms (sums over the step)."""

    def sum_of(name: str) -> float:
        return round(delta.get(f"{name}_sum", 0.0), 3)

    batches = delta.get("pp_batch_size_coins_count", 0.0)
    return {
        "batches": int(batches),
        "mean_batch_coins": (
            round(delta.get("pp_batch_size_coins_sum", 0.0) / batches, 1) if batches else None
        ),
        "history_load_s": sum_of("pp_history_load_seconds"),
        "predict_batch_s_all_models": sum_of("pp_predict_batch_seconds"),
        "webhook_delivery_s": sum_of("pp_webhook_delivery_seconds"),
        "webhook_posts": int(delta.get("pp_webhook_delivery_seconds_count", 0.0)),
    }


async def cmd_pipeline(args: argparse.Namespace, out: Any, *, full: bool) -> dict[str, Any]:
    from scripts.bench_baseline import BaselineModel, run_baseline

    result: dict[str, Any] = {
        "command": "pipeline" if full else "predict",
        "workers": args.workers,
        "replicas": args.replicas,
        "shard_moves": 0,
    }
    with tempfile.TemporaryDirectory(prefix="pp-bench-") as tmp:
        scratch = Path(tmp)
        async with pipeline_setup(args, webhooks=full, scratch=scratch, out=out) as (pipe, models):
            warm = await pipe.step(min(args.rate, 200.0), 2.0)
            out(f"warm-up: {warm.rows_processed}/{warm.rows_inserted} rows predicted")
            if args.find_max:
                steps = []
                best: StepResult | None = None
                rate = args.rate
                while rate <= args.max_rate:
                    s = await pipe.step(rate, args.seconds, settle_timeout=30)
                    summary = s.summary()
                    steps.append(summary)
                    _print_step(out, f"rate {rate:g}", summary)
                    p99 = pct(s.latencies, 99)
                    sustained = (
                        s.lost == 0
                        and s.duplicated == 0
                        and p99 is not None
                        and p99 * 1000 <= args.p99_bound_ms
                        and s.insert_rate >= 0.95 * rate
                    )
                    if not sustained:
                        out(f"  rate {rate:g} not sustained (p99 bound {args.p99_bound_ms} ms)")
                        break
                    best = s
                    rate += args.step
                result["find_max"] = {
                    "p99_bound_ms": args.p99_bound_ms,
                    "max_sustained_rate": best.rate if best else None,
                    "steps": steps,
                }
                chosen = best or s
                main = chosen
            else:
                claims0 = await shard_claims(pipe.db.dsn)
                killed: dict[str, Any] = {}
                async with anyio.create_task_group() as kill_tg:
                    if args.kill_worker_at is not None:

                        async def kill() -> None:
                            killed.update(await kill_one_worker(pipe, args.kill_worker_at, out))

                        kill_tg.start_soon(kill)
                    main = await pipe.step(args.rate, args.seconds)
                if killed.get("killed_pid") and args.workers > 1:
                    # The supervisor starts the worker again; its fair share comes back.
                    waited = time.monotonic()
                    await wait_shards_split(pipe.db.dsn, args.replicas * args.workers)
                    killed["shards_back_after_run_s"] = round(time.monotonic() - waited, 1)
                result["shard_moves"] = await shard_claims(pipe.db.dsn) - claims0
                result.update(killed)
                _print_step(out, "run", main.summary())
            result.update(main.summary())
            result["profile"] = _profile(main.metric_delta)
            result["peak_rss_mb"] = pipe.service.peak_rss_mb()
            result["ticks_per_s"] = round(main.rows_processed / main.seconds, 1)
            if full and not args.find_max:
                burst = await pipe.burst(args.burst_rows)
                result["burst"] = burst
                out(
                    f"capacity: {burst['rows']} rows (one per coin) inserted at once -> "
                    f"{burst['ticks_predicted']} ticks predicted by every model in "
                    f"{burst['seconds']} s = "
                    f"{burst['ticks_per_s']} ticks/s"
                )
            model_dir = scratch / "models"
            stored = {
                int(r["model_id"]): (int(r["id"]), r["file_path"])
                for r in await _fetch(
                    pipe.db.dsn, "SELECT id, model_id, file_path FROM active_models"
                )
            }
            del model_dir
            sample = main.ticks
            # The service is stopped: the baseline gets the machine to itself.
            for service in pipe.services:
                await service.stop()
            if full and not args.find_max and sample:
                baseline_models = [
                    BaselineModel(stored[int(m["id"])][0], Path(stored[int(m["id"])][1]),
                                  tuple(m["features"]))
                    for m in models
                ]  # fmt: skip
                ticks = [
                    (mint, datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=t))
                    for mint, t in sample
                ]
                base = await run_baseline(
                    pipe.db.dsn, baseline_models, ticks, max_seconds=args.baseline_seconds
                )
                result["baseline"] = base.as_dict()
                ours = result["burst"]["ticks_per_s"] or 0.0
                result["baseline_ratio"] = (
                    round(ours / base.ticks_per_s, 1) if base.ticks_per_s else None
                )
                out(
                    f"baseline (per coin, per model: 1000-row query, pandas features, single-row "
                    f"predict, single INSERT): {base.ticks} ticks x {len(models)} models in "
                    f"{base.seconds:.1f} s = {base.ticks_per_s:.2f} ticks/s "
                    f"(query {base.query_s:.1f} s, features {base.features_s:.1f} s, "
                    f"predict {base.predict_s:.1f} s, insert {base.insert_s:.1f} s)"
                )
                out(f"baseline_ratio (our capacity / baseline): {result['baseline_ratio']}")
            else:
                result["baseline_ratio"] = None
    out(
        f"service: cpu {result['cpu_s']} s over the run, peak RSS {result['peak_rss_mb']} MB; "
        f"profile {json.dumps(result['profile'])}"
    )
    return result


async def _fetch(dsn: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


# --------------------------------------------------------------------------- intake


async def trigger_overhead(dsn: str, statements: int, rows_per_statement: int) -> dict[str, Any]:
    """The collector's insert throughput with and without our trigger, interleaved rounds."""
    mints = coin_names(max(rows_per_statement, 50), prefix="trig")
    walk = CoinWalk(mints, seed=3)
    conn = await asyncpg.connect(dsn)
    timings = {"with": 0.0, "without": 0.0}
    rows = {"with": 0, "without": 0}
    per_round = max(1, statements // 8)
    try:
        for round_no in range(8):
            mode = "with" if round_no % 2 == 0 else "without"
            if mode == "without":
                await conn.execute(f"ALTER TABLE coin_metrics DISABLE TRIGGER {TRIGGER}")
            try:
                payloads = []
                for s in range(per_round):
                    now = datetime.now(UTC)
                    chunk = [
                        (m, walk.stamp(m, now))
                        for m in mints[(s * rows_per_statement) % len(mints) :][:rows_per_statement]
                    ] or [(mints[0], walk.stamp(mints[0], now))]
                    payloads.append(walk.columns(*zip(*chunk, strict=True)))
                started = time.perf_counter()
                for columns in payloads:
                    await conn.fetch(INSERT_SQL, *columns)
                timings[mode] += time.perf_counter() - started
                rows[mode] += sum(len(c[0]) for c in payloads)
            finally:
                if mode == "without":
                    await conn.execute(f"ALTER TABLE coin_metrics ENABLE TRIGGER {TRIGGER}")
    finally:
        await conn.close()
    with_rps = rows["with"] / timings["with"]
    without_rps = rows["without"] / timings["without"]
    return {
        "statements_each": per_round * 4,
        "rows_per_statement": rows_per_statement,
        "with_trigger_rows_per_s": round(with_rps, 1),
        "without_trigger_rows_per_s": round(without_rps, 1),
        # >1: the trigger slows the collector by that factor.
        "trigger_overhead_ratio": round(without_rps / with_rps, 3),
    }


async def cmd_intake(args: argparse.Namespace, out: Any) -> dict[str, Any]:
    from actors.app.service import Service
    from actors.runtime.logs import configure_logging
    from actors.scoring.batch import Batch
    from actors.scoring.batch_bus import BatchBus

    tap_key = 10_000_001
    seen: Counter[int] = Counter()
    batch_at: dict[int, float] = {}
    batches = 0

    async def consume(receive: Any) -> None:
        nonlocal batches
        async for batch in receive:
            assert isinstance(batch, Batch)
            batches += 1
            for tick in batch.ticks:
                seen[tick.row_id] += 1
                batch_at.setdefault(tick.row_id, batch.created_at)
            batch.completion.ack(tap_key)

    configure_logging("WARNING", "console")
    mints = coin_names(args.coins)
    result: dict[str, Any] = {"command": "intake"}
    with tempfile.TemporaryDirectory(prefix="pp-bench-") as tmp:
        settings = load_settings()
        async with bench_database(settings, Path(tmp)) as db:
            out(f"database: {db.where}")
            config = settings.replace(
                db_dsn=db.dsn,
                api_host="127.0.0.1",
                api_port=free_port(),
                n8n_webhook_url="",
                model_storage_path=str(Path(tmp) / "models"),
                log_level="WARNING",
                catchup_max_age_seconds=0,  # the trigger rows below are not replayed
            )
            # First without the service: the trigger's own cost (the queue write of a
            # NOTIFY happens with or without a listener), no CPU taken by its reaction.
            alone = await trigger_overhead(db.dsn, args.trigger_statements, args.per_statement)
            bus = BatchBus()
            service = Service(config)
            service.bus = bus
            async with anyio.create_task_group() as tg:
                tg.start_soon(consume, bus.subscribe(tap_key))
                await tg.start(service.run)
                try:
                    gen = await generate_in_child(
                        db.dsn,
                        mints,
                        rate=args.rate,
                        seconds=args.seconds,
                        rows_per_statement=args.per_statement,
                        seed=1,
                    )
                    max_id = max(r[2] for r in gen.rows)
                    conn = await asyncpg.connect(db.dsn)
                    try:
                        stopped = time.time()
                        backlog = max_id - await intake_done(conn)
                        deadline = time.monotonic() + 60
                        caught_up = False
                        while time.monotonic() < deadline:
                            got = await intake_done(conn)
                            if got >= max_id:
                                caught_up = True
                                break
                            await anyio.sleep(0.02)
                        drain = time.time() - stopped
                    finally:
                        await conn.close()
                    out(
                        f"inserted {len(gen.rows)} rows in {gen.statements} statements at "
                        f"{gen.rate:.0f} rows/s (asked {args.rate:g})"
                    )
                    trig = await trigger_overhead(
                        db.dsn, args.trigger_statements, args.per_statement
                    )
                finally:
                    await service.shutdown()
                    tg.cancel_scope.cancel()
    inserted = {r[2]: (r[0], r[3]) for r in gen.rows}
    newest: dict[str, int] = {}
    for row_id, (mint, _) in inserted.items():
        newest[mint] = max(newest.get(mint, 0), row_id)
    delivered = [i for i in inserted if seen[i] >= 1]
    lost = sum(1 for mint, row_id in newest.items() if seen[row_id] == 0) + (0 if caught_up else 1)
    duplicated = sum(1 for i in inserted if seen[i] > 1)
    latencies = [batch_at[i] - inserted[i][1] for i in delivered]
    result.update(
        {
            "rate": args.rate,
            "coins": args.coins,
            "rows_inserted": len(gen.rows),
            "insert_rows_per_s": round(gen.rate, 1),
            "rows_processed": len(delivered),
            "processed_rows_per_s": round(len(delivered) / gen.seconds, 1),
            "coalesced_rows": len(inserted) - len(delivered),
            "batches": batches,
            "lost": lost,
            "duplicated": duplicated,
            "p50_ms": ms(pct(latencies, 50)),
            "p99_ms": ms(pct(latencies, 99)),
            "max_ms": ms(max(latencies) if latencies else None),
            "intake_backlog_rows_at_stop": backlog,
            "intake_drain_s": round(drain, 3),
            **alone,
            "service_running": trig,
        }
    )
    out(
        f"intake: {result['rows_processed']} rows reached a batch "
        f"({result['processed_rows_per_s']} rows/s) in {batches} batches, coalesced "
        f"{result['coalesced_rows']}, lost {lost}, duplicated {duplicated}"
    )
    out(f"insert->batch p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms")
    for label, t in (("service stopped", alone), ("service running", trig)):
        out(
            f"collector inserts, {label} ({t['rows_per_statement']} rows/statement): "
            f"{t['with_trigger_rows_per_s']} rows/s with our trigger, "
            f"{t['without_trigger_rows_per_s']} rows/s without -> ratio "
            f"{t['trigger_overhead_ratio']}"
        )
    return result


# --------------------------------------------------------------------------- command line


async def cmd_webhooks(args: argparse.Namespace, out: Any) -> dict[str, Any]:
    from actors.runtime.logs import configure_logging
    from scripts.bench_webhooks import run as bench_webhooks

    configure_logging("WARNING")
    settings = load_settings()
    with tempfile.TemporaryDirectory(prefix="pp-bench-") as tmp:
        async with bench_database(settings, Path(tmp)) as db:
            out(f"database: {db.where}")
            result = await bench_webhooks(
                db.dsn,
                ticks=args.ticks,
                models=args.models,
                concurrency=args.concurrency,
                per_host_limit=args.per_host_limit,
                # Listed at each call: the pool's backends start after this line.
                postgres_cpu=lambda: sum(_cpu_of(_postgres_processes(db.data_dir)).values()),
                port=free_port(),
            )
    out(
        f"webhooks: {result['posts']} POSTs ({result['models_per_post']} predictions each) in "
        f"{result['seconds']} s = {result['posts_per_s']} POSTs/s, undelivered "
        f"{result['undelivered']}; CPU per POST: dispatcher "
        f"{result['dispatcher_cpu_ms_per_post']} ms, PostgreSQL "
        f"{result['postgres_cpu_ms_per_post']} ms; {result['claims']} claims, "
        f"{result['settle_flushes']} settlement flushes; on disk per POST: outbox "
        f"{result['outbox_bytes_per_post']} B, attempt log {result['attempts_bytes_per_post']} B"
    )
    return {"command": "webhooks", **result}


async def cmd_layouts(args: argparse.Namespace, out: Any) -> dict[str, Any]:
    from scripts.bench_layouts import run as bench_layouts

    settings = load_settings()
    with tempfile.TemporaryDirectory(prefix="pp-bench-") as tmp:
        async with bench_database(settings, Path(tmp)) as db:
            out(f"database: {db.where}")
            result = await bench_layouts(
                db.dsn,
                ticks=args.ticks,
                models=args.models,
                batch=args.batch,
                postgres_meter=lambda: _started_meter(db.data_dir),
            )
    for name in ("current", "narrow", "arrays", "move_current_to_arrays", "api_reads_ms"):
        out(f"{name}: {json.dumps(result[name])}")
    return {"command": "layouts", **result}


async def cmd_evaluator(args: argparse.Namespace, out: Any) -> dict[str, Any]:
    from scripts.bench_evaluator import run as bench_evaluator

    settings = load_settings()
    with tempfile.TemporaryDirectory(prefix="pp-bench-") as tmp:
        async with bench_database(settings, Path(tmp)) as db:
            out(f"database: {db.where}")
            result = await bench_evaluator(
                db.dsn,
                ticks=args.ticks,
                models=args.models,
                horizons=args.horizons,
                page_size=settings.evaluation_page_size,
                postgres_meter=lambda: _started_meter(db.data_dir),
            )
    out(
        f"evaluator: {result['predictions_evaluated']} predictions of {result['ticks']} ticks "
        f"in {result['pages']} pages, {result['wall_s']} s; per tick: wall "
        f"{result['wall_ms_per_tick']} ms, PostgreSQL CPU {result['pg_cpu_ms_per_tick']} ms, "
        f"client CPU {result['client_cpu_ms_per_tick']} ms, disk +{result['disk_bytes_per_tick']} B"
    )
    return {"command": "evaluator", **result}


async def cmd_upgrade(args: argparse.Namespace, out: Any) -> dict[str, Any]:
    from scripts.bench_upgrade import run as bench_upgrade

    settings = load_settings()
    with tempfile.TemporaryDirectory(prefix="pp-bench-") as tmp:
        async with bench_database(settings, Path(tmp)) as db:
            out(f"database: {db.where}")
            result = await bench_upgrade(
                db.dsn,
                rows=args.rows,
                models=args.models,
                postgres_meter=lambda: _started_meter(db.data_dir),
            )
    out(
        f"upgrade: {result['old_rows']} old prediction rows moved in {result['wall_s']} s "
        f"({result['rows_per_s']} rows/s, PostgreSQL CPU {result['pg_cpu_s']} s); "
        f"prediction tables {result['bytes_before']} -> {result['bytes_after']} B"
    )
    return {"command": "upgrade", **result}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, *, coins: int, rate: float, seconds: float) -> None:
        p.add_argument("--coins", type=int, default=coins, help=f"live coins (default {coins})")
        p.add_argument("--rate", type=float, default=rate, help=f"rows/s (default {rate:g})")
        p.add_argument("--seconds", type=float, default=seconds, help="measured seconds")
        p.add_argument("--per-statement", type=int, default=20, help="rows per INSERT (20)")
        p.add_argument("--json", action="store_true", help="last line: one JSON object")

    features = sub.add_parser("features", help="Polars engine vs the pandas way, rows/s")
    features.add_argument("--coins", type=int, default=1000, help="coins (default 1000)")
    features.add_argument("--rows", type=int, default=200, help="rows per coin (default 200)")
    features.add_argument("--json", action="store_true", help="last line: one JSON object")
    intake = sub.add_parser("intake", help="rows/s through intake, insert->batch latency")
    common(intake, coins=2000, rate=1000, seconds=20)
    intake.add_argument("--trigger-statements", type=int, default=800)
    webhooks = sub.add_parser("webhooks", help="the webhook dispatcher alone: POSTs/s, CPU/POST")
    webhooks.add_argument("--ticks", type=int, default=3000, help="POSTs (one per coin tick)")
    webhooks.add_argument("--models", type=int, default=10, help="predictions per POST")
    webhooks.add_argument("--concurrency", type=int, default=16, help="WEBHOOK_CONCURRENCY")
    webhooks.add_argument("--per-host-limit", type=int, default=8, help="WEBHOOK_PER_HOST_LIMIT")
    webhooks.add_argument("--json", action="store_true", help="last line: one JSON object")
    layouts = sub.add_parser("layouts", help="prediction-store layouts: CPU and bytes per tick")
    layouts.add_argument("--ticks", type=int, default=20000, help="coin ticks stored")
    layouts.add_argument("--models", type=int, default=10, help="predictions per tick")
    layouts.add_argument("--batch", type=int, default=100, help="ticks per statement")
    layouts.add_argument("--json", action="store_true", help="last line: one JSON object")
    evaluator = sub.add_parser("evaluator", help="the evaluator alone: cost per evaluated tick")
    evaluator.add_argument("--ticks", type=int, default=20000, help="coin ticks to evaluate")
    evaluator.add_argument("--models", type=int, default=10, help="predictions per tick")
    evaluator.add_argument("--horizons", type=int, default=1, help="distinct horizons")
    evaluator.add_argument("--json", action="store_true", help="last line: one JSON object")
    upgrade = sub.add_parser("upgrade", help="migration 0017 on a database of old rows")
    upgrade.add_argument("--rows", type=int, default=1_000_000, help="old prediction rows")
    upgrade.add_argument("--models", type=int, default=10, help="models predicting each tick")
    upgrade.add_argument("--json", action="store_true", help="last line: one JSON object")
    from scripts.bench_backtest import add_arguments as backtest_arguments

    backtest_arguments(
        sub.add_parser("backtest", help="backtest speed/memory, ratio to /api/predict, live impact")
    )
    for name, helptext in (
        ("predict", "ticks/s and insert->prediction latency with active models"),
        ("pipeline", "the whole pipeline, webhooks, baseline comparison"),
    ):
        p = sub.add_parser(name, help=helptext)
        common(p, coins=2000, rate=1000, seconds=20)
        p.add_argument("--models", type=int, default=10, help="models (XGBoost/RF alternating)")
        p.add_argument("--history-rows", type=int, default=40, help="seeded rows per coin")
        p.add_argument("--find-max", action="store_true", help="raise the rate until p99 > bound")
        p.add_argument(
            "--webhook-batch-ticks",
            type=int,
            default=1,
            help="WEBHOOK_BATCH_MAX_TICKS: coin ticks per POST (1, the default: one per tick)",
        )
        p.add_argument("--p99-bound-ms", type=float, default=1000.0)
        p.add_argument("--step", type=float, default=500.0, help="rate step of --find-max")
        p.add_argument("--max-rate", type=float, default=10_000.0, help="--find-max stops here")
        p.add_argument(
            "--burst-rows", type=int, default=0, help="coins in the capacity burst (0: all)"
        )
        p.add_argument("--baseline-seconds", type=float, default=20.0, help="baseline time box")
        p.add_argument("--workers", type=int, default=1, help="serve --workers N (default 1)")
        p.add_argument(
            "--replicas", type=int, default=1, help="services on the same database (default 1)"
        )
        p.add_argument(
            "--kill-worker-at",
            type=float,
            default=None,
            help="SIGKILL one worker (or the last replica) this many seconds into the run",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def out(line: str) -> None:
        print(line, flush=True)

    out(f"machine: {os.cpu_count()} cores; bench {args.command} {vars(args)}")
    if args.command == "features":
        from scripts.bench_features import run as bench_features

        result = bench_features(args.coins, args.rows)
        out(
            f"features of {result['rows']} rows ({args.coins} coins x {args.rows}), "
            f"{result['features']} engineered columns: Polars {result['polars_rows_per_s']} "
            f"rows/s ({result['polars_s']} s), pandas per coin {result['pandas_rows_per_s']} "
            f"rows/s ({result['pandas_s']} s) -> ratio {result['ratio']}x"
        )
    elif args.command == "intake":
        result = anyio.run(cmd_intake, args, out)
    elif args.command == "webhooks":
        result = anyio.run(cmd_webhooks, args, out)
    elif args.command == "layouts":
        result = anyio.run(cmd_layouts, args, out)
    elif args.command == "evaluator":
        result = anyio.run(cmd_evaluator, args, out)
    elif args.command == "upgrade":
        result = anyio.run(cmd_upgrade, args, out)
    elif args.command == "backtest":
        from scripts.bench_backtest import run as bench_backtest

        result = bench_backtest(args, out)
    else:
        result = anyio.run(lambda: cmd_pipeline(args, out, full=args.command == "pipeline"))
    if args.json:
        print(json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
