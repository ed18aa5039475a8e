"""A model's predictions of a batch and their webhook jobs in one statement.

The predictor's transaction (BEGIN, INSERT predictions, INSERT outbox jobs,
COMMIT) cost four round trips per model and batch; with ten models that was
forty per batch, a large part of the latency at low rates. One statement is
one implicit transaction, so the guarantee stays: a prediction is stored with
its jobs or not at all. Jobs are kept only for the coin ticks whose prediction
this statement inserted, so re-processing a tick queues nothing twice.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from storage import predictions
from storage.outbox import OutboxJob
from storage.predictions import NewPrediction, StoredPrediction

_JOBS_FIRST = predictions.COLUMN_COUNT + 1
_JOB_ARRAYS = ", ".join(
    f"${_JOBS_FIRST + i}::{t}[]"
    for i, t in enumerate(("text", "text", "text", "timestamptz", "text", "text", "text"))
)
_SQL = f"""
WITH new AS ({predictions.insert_sql()}),
jobs AS (
    INSERT INTO webhook_outbox (idempotency_key, target_url, coin_id, data_timestamp,
                                active_model_ids, model_ids, payload)
    SELECT k, u, c, t, a::bigint[], m::bigint[], p::jsonb
    FROM unnest({_JOB_ARRAYS}) AS j(k, u, c, t, a, m, p)
    WHERE EXISTS (SELECT 1 FROM new WHERE new.coin_id = j.c AND new.data_timestamp = j.t)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id
)
SELECT new.*, (SELECT count(*) FROM jobs) AS queued FROM new
"""


def _ids(values: Sequence[int]) -> str:
    """A bigint[] literal: unnest() would flatten a bigint[][] into single values."""
    return "{" + ",".join(str(int(v)) for v in values) + "}"


async def insert_with_jobs(
    conn: asyncpg.Connection, rows: Sequence[NewPrediction], jobs: Sequence[OutboxJob]
) -> tuple[list[StoredPrediction], int]:
    """(the predictions this call inserted, how many jobs it queued)."""
    if not rows:
        return [], 0
    result = await conn.fetch(
        _SQL,
        *predictions.column_arrays(rows),
        [j.idempotency_key for j in jobs],
        [j.target_url for j in jobs],
        [j.coin_id for j in jobs],
        [j.data_timestamp for j in jobs],
        [_ids(j.active_model_ids) for j in jobs],
        [_ids(j.model_ids) for j in jobs],
        [j.payload for j in jobs],
    )
    queued = int(result[0]["queued"]) if result else 0
    return predictions.stored(result), queued
