"""The evaluator: writes the outcome of every prediction once its window has closed.

Every `interval` seconds it evaluates the predictions that fell due at least
`grace_seconds` ago (the collector writes rows with some lag; a row that
arrives late but within the grace period still counts), oldest first, one page
per transaction, until a page comes back short. The outcome rules live in
`storage/evaluations.py`.

A page that fails to write (database down, deadlock, timeout) rolls back, so
its predictions stay pending and are evaluated on a later cycle; the failure is
logged with its error and counted in `failed_cycles`. Anything else is a bug
and goes to the supervisor, which logs it and restarts the actor.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import anyio
import asyncpg
import structlog
from anyio.abc import TaskStatus

from actors import metrics
from storage import evaluations
from storage.config import Settings

ACTOR_NAME = "evaluator"

# Errors of the database or the way to it: worth retrying on the next cycle.
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)


class Evaluator:
    """Evaluates due predictions in pages; `evaluate_due()` runs one full catch-up."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        grace_seconds: float,
        interval: float,
        page_size: int,
        gauge_refresh_seconds: float = 300.0,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.pool = pool
        self.grace_seconds = grace_seconds
        self.interval = interval
        self.page_size = page_size
        self.gauge_refresh_seconds = gauge_refresh_seconds
        self.failed_cycles = 0  # cycles that hit a database error (operators and tests look)
        self.evaluated_total = 0  # by this instance
        self._stopping = False
        self._wake = anyio.Event()
        self._gauges_refreshed = float("-inf")
        self._log = structlog.get_logger(__name__).bind(actor=ACTOR_NAME)

    @classmethod
    def from_settings(cls, settings: Settings, pool: asyncpg.Pool, **overrides: Any) -> Evaluator:
        options: dict[str, Any] = {
            "grace_seconds": settings.evaluation_grace_seconds,
            "interval": settings.evaluation_interval_seconds,
            "page_size": settings.evaluation_page_size,
        }
        options.update(overrides)
        return cls(pool, **options)

    def request_stop(self) -> None:
        """Finish the page being written, then stop."""
        self._stopping = True
        self._wake.set()

    def poke(self) -> None:
        """Look now instead of at the end of the interval."""
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self._log.info(
            "evaluator_started",
            grace_s=self.grace_seconds,
            interval_s=self.interval,
            page_size=self.page_size,
        )
        task_status.started()
        while not self._stopping:
            try:
                await self.evaluate_due()
            except RETRYABLE_ERRORS as exc:
                self.failed_cycles += 1
                metrics.EVALUATION_ERRORS.inc({})
                self._log.error(
                    "evaluation_cycle_failed",
                    error=f"{type(exc).__name__}: {exc}",
                    failed_cycles=self.failed_cycles,
                    retry_in_s=self.interval,
                )
            if self._stopping:
                break
            with anyio.move_on_after(self.interval):
                await self._wake.wait()
            self._wake = anyio.Event()
        self._log.info("evaluator_stopped", evaluated=self.evaluated_total)

    async def evaluate_due(self) -> int:
        """Evaluate every prediction that is due now, page by page; returns how many."""
        results: Counter[str] = Counter()
        models: set[int] = set()
        started = time.monotonic()
        async with self.pool.acquire() as conn:
            while True:
                page = await evaluations.evaluate_due_page(
                    conn, grace_seconds=self.grace_seconds, limit=self.page_size
                )
                for row in page:
                    results[row.result] += 1
                    models.add(row.active_model_id)
                if len(page) < self.page_size or self._stopping:
                    break
            await self._update_gauges(conn, models)
        evaluated = sum(results.values())
        for result, count in results.items():
            metrics.EVALUATIONS.add({"result": result}, count)
        self.evaluated_total += evaluated
        if evaluated:
            self._log.info(
                "predictions_evaluated",
                evaluated=evaluated,
                by_result=dict(results),
                active_model_ids=sorted(models),
                took_ms=round((time.monotonic() - started) * 1000, 1),
            )
        return evaluated

    async def _update_gauges(self, conn: asyncpg.Connection, touched: set[int]) -> None:
        """Per-model gauges for the models just evaluated (all of them now and then)."""
        metrics.EVALUATION_LAG.set({}, await evaluations.evaluation_lag_seconds(conn))
        now = time.monotonic()
        if now - self._gauges_refreshed >= self.gauge_refresh_seconds:
            self._gauges_refreshed = now
            counts = await evaluations.model_evaluation_counts(conn)
        elif touched:
            counts = await evaluations.model_evaluation_counts(conn, sorted(touched))
        else:
            return
        for model in counts:
            labels = {"active_model_id": str(model.active_model_id)}
            metrics.MODEL_EVALUATED.set(labels, model.evaluated)
            if model.success_rate is not None:
                metrics.MODEL_LIVE_SUCCESS_RATE.set(labels, model.success_rate)
