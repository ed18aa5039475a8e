"""Manual predictions of a model and their webhook jobs in one statement.

(A batch's jobs are queued by the batcher with the cursor move, one per coin
tick for every model; predictions outside a batch carry their own.) The
predictor's transaction (BEGIN, INSERT predictions, INSERT outbox jobs,
COMMIT) cost four round trips per model and batch; with ten models that was
forty per batch, a large part of the latency at low rates. One statement is
one implicit transaction, so the guarantee stays: a prediction is stored with
its jobs or not at all. Jobs are kept only for the coin ticks whose prediction
this statement inserted, so re-processing a tick queues nothing twice.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from storage import outbox, predictions
from storage.outbox import OutboxJob
from storage.predictions import NewPrediction, StoredPrediction

# Jobs only for the coin ticks whose prediction this statement inserted.
_JOBS_WHERE = (
    "WHERE EXISTS (SELECT 1 FROM new WHERE new.coin_id = j.c AND new.data_timestamp = j.t)"
)
_SQL = {
    shared: f"""
WITH new AS ({predictions.insert_sql(shared=shared)}),
jobs AS ({outbox.enqueue_sql(predictions.COLUMN_COUNT + 1, _JOBS_WHERE)}),
snapshots AS ({outbox.snapshots_sql(predictions.COLUMN_COUNT + 8)})
SELECT new.*, (SELECT count(*) FROM jobs) AS queued FROM new
"""
    for shared in (False, True)
}


async def insert_with_jobs(
    conn: asyncpg.Connection,
    rows: Sequence[NewPrediction],
    jobs: Sequence[OutboxJob],
) -> tuple[list[StoredPrediction], int]:
    """(the predictions this call inserted, how many jobs it queued)."""
    if not rows:
        return [], 0
    shared = predictions.shares_model_fields(rows)
    args = (
        *predictions.parameters(rows, shared),
        *outbox.job_arrays(jobs),
        *outbox.snapshot_arrays(jobs),
    )
    result = await conn.fetch(_SQL[shared], *args)
    queued = int(result[0]["queued"]) if result else 0
    return predictions.stored(result), queued
