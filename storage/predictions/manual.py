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

from storage.outbox import jobs as outbox
from storage.outbox.jobs import OutboxJob
from storage.predictions import writes as predictions
from storage.predictions.writes import NewPrediction, StoredPrediction

# Jobs only for the coin ticks whose prediction this statement inserted.
_JOBS_WHERE = (
    "WHERE EXISTS (SELECT 1 FROM new WHERE new.coin_id = j.c AND new.data_timestamp = j.t)"
)
_STORE_PARAMS = 10
_SQL = predictions.store_sql(f""",
jobs AS ({outbox.enqueue_sql(_STORE_PARAMS + 1, _JOBS_WHERE)}),
snapshots AS ({outbox.snapshots_sql(_STORE_PARAMS + 8)})
SELECT o.*, (SELECT count(*) FROM jobs) AS queued
FROM outcome o ORDER BY o.position
""")


async def insert_with_jobs(
    conn: asyncpg.Connection,
    rows: Sequence[NewPrediction],
    jobs: Sequence[OutboxJob],
) -> tuple[list[StoredPrediction], int]:
    """(the predictions this call inserted, how many jobs it queued)."""
    if not rows:
        return [], 0
    arrays = await predictions.store_arrays(conn, rows)
    records, results = await predictions.fetch_stored(
        conn, _SQL, arrays, *outbox.job_arrays(jobs), *outbox.snapshot_arrays(jobs)
    )
    queued = sum(int(result[0]["queued"]) for result in results if result)
    return predictions.stored(records), queued
