"""The evaluator: writes the outcome of every prediction once its window has closed.

Every `interval` seconds it evaluates the predictions that fell due at least
`grace_seconds` ago (the collector writes rows with some lag; a row that
arrives late but within the grace period still counts), oldest first, one page
per transaction, until a page comes back short. The outcome rules live in
`storage/predictions/evaluations.py`.

A page that fails to write (database down, deadlock, timeout) rolls back, so
its predictions stay pending and are evaluated on a later cycle; the failure is
logged with its error and counted in `failed_sweeps` (actors/runtime/periodic.py). Anything
else is a bug and goes to the supervisor, which logs it and restarts the actor.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import asyncpg

from actors.runtime import metrics
from actors.runtime.periodic import PeriodicActor
from storage.config import Settings
from storage.predictions import evaluations

ACTOR_NAME = "evaluator"


class Evaluator(PeriodicActor):
    """Evaluates due predictions in pages; `evaluate_due()` runs one full catch-up."""

    name = ACTOR_NAME
    failure_event = "evaluation_cycle_failed"

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
        super().__init__(interval)
        self.pool = pool
        self.grace_seconds = grace_seconds
        self.page_size = page_size
        self.gauge_refresh_seconds = gauge_refresh_seconds
        self.evaluated_total = 0  # by this instance
        self._gauges_refreshed = float("-inf")
        self._counts: dict[int, tuple[int, int]] = {}  # model -> (evaluated, successes)

    @classmethod
    def from_settings(cls, settings: Settings, pool: asyncpg.Pool, **overrides: Any) -> Evaluator:
        options: dict[str, Any] = {
            "grace_seconds": settings.evaluation_grace_seconds,
            "interval": settings.evaluation_interval_seconds,
            "page_size": settings.evaluation_page_size,
        }
        options.update(overrides)
        return cls(pool, **options)

    def started_fields(self) -> dict[str, Any]:
        return {
            "grace_s": self.grace_seconds,
            "interval_s": self.interval,
            "page_size": self.page_size,
        }

    def count_failure(self) -> None:
        metrics.EVALUATION_ERRORS.inc({})

    def stopped_fields(self) -> dict[str, Any]:
        return {"evaluated": self.evaluated_total}

    async def sweep(self) -> int:
        return await self.evaluate_due()

    async def evaluate_due(self) -> int:
        """Evaluate every prediction that is due now, page by page; returns how many."""
        results: Counter[str] = Counter()
        per_model: Counter[tuple[int, str]] = Counter()
        started = time.monotonic()
        async with self.pool.acquire() as conn:
            while True:
                page = await evaluations.evaluate_due_page(
                    conn, grace_seconds=self.grace_seconds, limit=self.page_size
                )
                for row in page:
                    results[row.result] += 1
                    per_model[(row.active_model_id, row.result)] += 1
                if page.outcomes < self.page_size or self._stopping:
                    break
            await self._update_gauges(conn, per_model)
        evaluated = sum(results.values())
        for result, count in results.items():
            metrics.EVALUATIONS.add({"result": result}, count)
        self.evaluated_total += evaluated
        if evaluated:
            self._log.info(
                "predictions_evaluated",
                evaluated=evaluated,
                by_result=dict(results),
                active_model_ids=sorted({m for m, _ in per_model}),
                took_ms=round((time.monotonic() - started) * 1000, 1),
            )
        return evaluated

    async def _update_gauges(
        self, conn: asyncpg.Connection, judged: Counter[tuple[int, str]]
    ) -> None:
        """Per-model gauges: counted in full now and then (one pass over the view), and
        between those moved on by what this sweep judged (no full scan per sweep)."""
        metrics.EVALUATION_LAG.set({}, await evaluations.evaluation_lag_seconds(conn))
        now = time.monotonic()
        if now - self._gauges_refreshed >= self.gauge_refresh_seconds:
            self._gauges_refreshed = now
            self._counts = {
                m.active_model_id: (m.evaluated, m.successes)
                for m in await evaluations.model_evaluation_counts(conn)
            }
            touched = set(self._counts)
        else:
            touched = set()
            for (model, result), n in judged.items():
                evaluated, successes = self._counts.get(model, (0, 0))
                if result in ("success", "failed"):
                    evaluated += n
                if result == "success":
                    successes += n
                self._counts[model] = (evaluated, successes)
                touched.add(model)
        for model in touched:
            evaluated, successes = self._counts[model]
            labels = {"active_model_id": str(model)}
            metrics.MODEL_EVALUATED.set(labels, evaluated)
            if evaluated:
                metrics.MODEL_LIVE_SUCCESS_RATE.set(labels, successes / evaluated)
