"""The retention actor: deletes webhook jobs that are done, so the outbox does not fill the disk.

Every processed coin tick leaves a job and its attempts behind (~5.5 kB); at 50
ticks/s that is ~24 GB a day. Every `interval` seconds this actor deletes the
delivered and dead jobs (with their attempts) whose last activity and tick are
older than `retention_seconds`, in chunks of `chunk_rows` (short statements, no
long locks), until a chunk comes back short; then the model snapshots no job
refers to any more. Pending jobs are never deleted. With
`prediction_retention_seconds` set (off by default: the history is the users'),
evaluated predictions of ticks older than that go too; pending ones never do.
The queries and why they are safe are in `storage/outbox/retention.py`.

A pass that fails (database down, a lock not granted in time) is logged and
counted, and the next pass starts over: what was deleted stays deleted, the rest
waits. Anything else is a bug and goes to the supervisor, which restarts the actor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from actors.runtime import metrics
from actors.runtime.periodic import PeriodicActor
from storage.config import Settings
from storage.outbox import retention

ACTOR_NAME = "retention"


@dataclass(frozen=True, slots=True)
class RetentionPass:
    """What one pass deleted."""

    cutoff: datetime | None  # of webhook jobs; None when they are kept
    jobs: int
    attempts: int
    snapshots: int
    chunks: int
    predictions: int = 0


class Retention(PeriodicActor):
    """Deletes done webhook jobs periodically; `run_once()` runs one full pass."""

    name = ACTOR_NAME
    failure_event = "retention_pass_failed"

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        retention_seconds: float,
        interval: float,
        chunk_rows: int,
        lock_timeout_seconds: float = 5.0,
        prediction_retention_seconds: float = 0,
        dead_retention_seconds: float | None = None,
    ) -> None:
        # Dead jobs are kept as long as delivered ones unless told otherwise.
        dead = retention_seconds if dead_retention_seconds is None else dead_retention_seconds
        periods = (retention_seconds, dead, prediction_retention_seconds)
        if min(periods) < 0:
            raise ValueError("retention periods must not be negative (0 keeps the rows)")
        if max(periods) == 0:
            raise ValueError("nothing to delete: every retention period is 0")
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be at least 1")
        super().__init__(interval)
        self.pool = pool
        self.retention_seconds = retention_seconds
        self.dead_retention_seconds = dead
        self.prediction_retention_seconds = prediction_retention_seconds
        self.chunk_rows = chunk_rows
        self.lock_timeout_seconds = lock_timeout_seconds
        self.passes = 0  # completed passes of this instance

    @classmethod
    def from_settings(cls, settings: Settings, pool: asyncpg.Pool, **overrides: Any) -> Retention:
        options: dict[str, Any] = {
            "retention_seconds": settings.webhook_retention_seconds,
            "dead_retention_seconds": settings.webhook_dead_retention_seconds,
            "prediction_retention_seconds": settings.prediction_retention_seconds,
            "interval": settings.retention_interval_seconds,
            "chunk_rows": settings.retention_chunk_rows,
        }
        options.update(overrides)
        return cls(pool, **options)

    def started_fields(self) -> dict[str, Any]:
        return {
            "retention_s": self.retention_seconds,
            "dead_retention_s": self.dead_retention_seconds,
            "prediction_retention_s": self.prediction_retention_seconds,
            "interval_s": self.interval,
            "chunk_rows": self.chunk_rows,
        }

    def count_failure(self) -> None:
        metrics.RETENTION_ERRORS.inc({})

    def stopped_fields(self) -> dict[str, Any]:
        return {"passes": self.passes}

    async def sweep(self) -> RetentionPass:
        return await self.run_once()

    async def run_once(self) -> RetentionPass:
        """Delete every done job older than the retention, chunk by chunk, then the
        snapshots nothing refers to, then the old evaluated predictions (each part
        only when its period is set); log and count what went."""
        started = time.monotonic()
        now = datetime.now(UTC)
        cutoff = _cutoff(now, self.retention_seconds)
        dead_cutoff = _cutoff(now, self.dead_retention_seconds)
        oldest_prediction = _cutoff(now, self.prediction_retention_seconds)
        # The later of the two: every job either deletes was created before it.
        newest = max((c for c in (cutoff, dead_cutoff) if c is not None), default=None)
        jobs = attempts = snapshots = chunks = predictions = 0
        try:
            async with self.pool.acquire() as conn:
                if newest is not None:
                    bound = await retention.job_id_bound(conn, newest)
                    after = 0
                    while not self._stopping:
                        chunk = await retention.delete_jobs_chunk(
                            conn,
                            cutoff=cutoff,
                            dead_cutoff=dead_cutoff,
                            after=after,
                            bound=bound,
                            limit=self.chunk_rows,
                        )
                        chunks += 1
                        jobs += chunk.jobs
                        attempts += chunk.attempts
                        # Counted per chunk: a later failure does not hide what was deleted.
                        self._count("webhook_outbox", chunk.jobs)
                        self._count("webhook_attempts", chunk.attempts)
                        if chunk.scanned < self.chunk_rows or chunk.last_id is None:
                            break
                        after = chunk.last_id
                    if not self._stopping:
                        snapshots = await retention.delete_unreferenced_snapshots(
                            conn,
                            cutoff=newest,
                            limit=self.chunk_rows,
                            lock_timeout_seconds=self.lock_timeout_seconds,
                        )
                        self._count("webhook_model_snapshots", snapshots)
                if oldest_prediction is not None:
                    while not self._stopping:
                        gone = await retention.delete_predictions_chunk(
                            conn, cutoff=oldest_prediction, limit=self.chunk_rows
                        )
                        chunks += 1
                        predictions += gone.predictions
                        self._count("predictions", gone.predictions)
                        if gone.ticks < self.chunk_rows:
                            break
        except BaseException:
            if jobs or snapshots or predictions:
                # What went before the failure is gone for good: say so.
                self._log.warning(
                    "retention_pass_partial",
                    jobs=jobs,
                    attempts=attempts,
                    snapshots=snapshots,
                    predictions=predictions,
                )
            raise
        self.passes += 1
        self._log.info(
            "retention_pass",
            cutoff=None if cutoff is None else cutoff.isoformat(),
            jobs=jobs,
            attempts=attempts,
            snapshots=snapshots,
            predictions=predictions,
            chunks=chunks,
            took_ms=round((time.monotonic() - started) * 1000, 1),
        )
        return RetentionPass(cutoff, jobs, attempts, snapshots, chunks, predictions)

    @staticmethod
    def _count(table: str, rows: int) -> None:
        if rows:
            metrics.RETENTION_DELETED.add({"table": table}, rows)


def _cutoff(now: datetime, seconds: float) -> datetime | None:
    """Rows older than this go; None: a period of 0 keeps them."""
    return now - timedelta(seconds=seconds) if seconds else None
