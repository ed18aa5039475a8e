"""Runs queued API backtests, one at a time, each in its own worker process.

A backtest is CPU work for seconds to minutes: in the service's process it
would hold the event loop (and the GIL) that the live pipeline needs. The
worker (`actors.backtest.worker`) runs at a lower priority with one thread for
Polars and the models, so a backtest uses at most one of the machine's cores
and yields it to the live pipeline. The runner only claims jobs, starts and
watches the process, kills it when its row is deleted or the service stops,
and records a crash with the end of the worker's stderr. A backtest left
running by a stopped service is marked failed at the next start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import anyio
import asyncpg
import structlog
from anyio.abc import Process, TaskStatus

from actors.backtest.worker import settings_document
from storage.backtests import store as backtests
from storage.backtests.store import BacktestRow
from storage.config import REPO_ROOT, Settings

log = structlog.get_logger(__name__)

POLL_SECONDS = 1.0
STDERR_TAIL = 2000
# One thread each for Polars, OpenMP (XGBoost, scikit-learn) and BLAS in the worker.
WORKER_THREADS_ENV = {
    "POLARS_MAX_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


class BacktestRunner:
    def __init__(self, settings: Settings, dsn: str, pool: asyncpg.Pool) -> None:
        # The worker connects to the database the service uses (the embedded one too).
        self._settings = settings.replace(db_dsn=dsn)
        self._pool = pool
        self._wake = anyio.Event()
        self._stopping = False
        self._log = log.bind(actor="backtests")

    def poke(self) -> None:
        """A backtest was queued: claim it now rather than at the next poll."""
        self._wake.set()

    def request_stop(self) -> None:
        """Stop now: a running backtest is killed and marked failed (request it again);
        draining one could take minutes of a shutdown deadline."""
        self._stopping = True
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with self._pool.acquire() as conn:
            interrupted = await backtests.fail_interrupted(conn)
        if interrupted:
            self._log.warning("backtests_interrupted", count=interrupted)
        task_status.started()
        while not self._stopping:
            async with self._pool.acquire() as conn:
                job = await backtests.claim_next(conn)
            if job is None:
                with anyio.move_on_after(POLL_SECONDS):
                    await self._wake.wait()
                self._wake = anyio.Event()
                continue
            await self._run_one(job)

    async def _run_one(self, job: BacktestRow) -> None:
        self._log.info("backtest_started", backtest_id=job.id, model_id=job.model_id)
        document = json.dumps(
            {"settings": json.loads(settings_document(self._settings)), "backtest_id": job.id}
        )
        process = await anyio.open_process(
            [sys.executable, "-m", "actors.backtest.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=str(REPO_ROOT),
            env={**os.environ, **WORKER_THREADS_ENV},
        )
        tail = bytearray()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_collect, process, tail)
                assert process.stdin is not None
                await process.stdin.send(document.encode())
                await process.stdin.aclose()
                deleted = await self._watch(process, job.id)
        finally:
            if process.returncode is None:
                with anyio.CancelScope(shield=True):
                    process.kill()
                    await process.wait()
        code = process.returncode
        if deleted:
            self._log.info("backtest_cancelled", backtest_id=job.id)
            return
        async with self._pool.acquire() as conn:
            current = await backtests.get(conn, job.id)
            if current is not None and current.status == "running":
                message = tail.decode(errors="replace")[-STDERR_TAIL:].strip()
                await backtests.fail(
                    conn, job.id, f"the backtest worker exited with status {code}: {message}"
                )
                self._log.error("backtest_failed", backtest_id=job.id, code=code, stderr=message)
                return
        self._log.info(
            "backtest_finished", backtest_id=job.id, status=current.status if current else None
        )

    async def _watch(self, process: Process, backtest_id: int) -> bool:
        """Wait for the worker; True when the backtest was deleted (the worker is killed)."""
        while True:
            with anyio.move_on_after(0.1 if self._stopping else POLL_SECONDS):
                await process.wait()
                return False
            if self._stopping:
                process.kill()
                await process.wait()
                async with self._pool.acquire() as conn:
                    await backtests.fail(conn, backtest_id, backtests.INTERRUPTED)
                return True
            async with self._pool.acquire() as conn:
                if not await backtests.exists(conn, backtest_id):
                    process.kill()
                    await process.wait()
                    return True


async def _collect(process: Process, tail: bytearray) -> None:
    assert process.stderr is not None
    async for chunk in process.stderr:
        tail.extend(chunk)
        del tail[:-STDERR_TAIL]
