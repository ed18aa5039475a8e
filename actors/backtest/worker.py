"""The worker process of one API backtest: `python -m actors.backtest.worker`.

Started by `actors.backtest.runner` with the service's settings as JSON on
stdin and the backtest id, at a lower CPU priority and with one thread for
Polars and the models, so that the live pipeline keeps its core. It reports
progress in the `backtests` row and stops as soon as that row is gone (DELETE
is the cancel). Exit status 0 also covers a refused model (recorded as the
backtest's error); anything else is a crash the runner records.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from typing import Any

import anyio

from actors.backtest.engine import BacktestModel, Stopwatch, summarize
from actors.backtest.run import run_on_database
from storage.backtests import store as backtests
from storage.backtests.store import TICK_COLUMNS
from storage.config import Settings
from storage.db.pool import create_pool
from storage.models.model_import import ModelImportError, client_from_settings, load_checked_model

PROGRESS_INTERVAL_SECONDS = 0.5


def settings_document(settings: Settings) -> str:
    """What the runner sends on stdin (the effective settings, not re-read from the env)."""
    return json.dumps(dataclasses.asdict(settings))


def _settings(document: dict[str, Any]) -> Settings:
    return Settings(**document)


class _Progress:
    def __init__(self) -> None:
        self.done = 0
        self.total: int | None = None

    def add(self, ticks: int) -> None:
        self.done += ticks

    def set_total(self, ticks: int) -> None:
        self.total = ticks


async def run_job(settings: Settings, backtest_id: int) -> None:
    pool = await create_pool(settings.db_dsn, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            job = await backtests.get(conn, backtest_id)
        if job is None:
            return
        clock = Stopwatch()
        try:
            async with client_from_settings(settings) as client:
                checked = await load_checked_model(pool, settings, client, job.model_id)
        except ModelImportError as exc:
            async with pool.acquire() as conn:
                await backtests.fail(conn, backtest_id, exc.message)
            return
        model = BacktestModel.from_checked(checked)
        progress = _Progress()
        deleted = False

        async def report() -> None:
            nonlocal deleted
            while True:
                await anyio.sleep(PROGRESS_INTERVAL_SECONDS)
                async with pool.acquire() as conn:
                    if not await backtests.report_progress(
                        conn, backtest_id, progress.done, progress.total
                    ):
                        deleted = True
                        tg.cancel_scope.cancel()
                        return

        async with anyio.create_task_group() as tg:
            tg.start_soon(report)
            (run,) = await run_on_database(
                pool,
                [model],
                start=job.range_from,
                end=job.range_to,
                grace_seconds=settings.evaluation_grace_seconds,
                progress=progress.add,
                on_total=progress.set_total,
            )
            tg.cancel_scope.cancel()
        if deleted:
            return
        summary = summarize(run, start=job.range_from, end=job.range_to, seconds=clock.seconds)
        ticks = run.ticks().select(TICK_COLUMNS).rows()
        async with pool.acquire() as conn:
            await backtests.report_progress(conn, backtest_id, progress.done, progress.total)
            await backtests.finish(conn, backtest_id, summary, ticks)
    finally:
        await pool.close()


def main() -> int:
    document = json.loads(sys.stdin.read())
    settings = _settings(document["settings"])
    backtest_id = int(document["backtest_id"])
    with contextlib.suppress(OSError):
        os.nice(10)  # the live pipeline first
    anyio.run(run_job, settings, backtest_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
