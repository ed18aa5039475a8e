"""Deleting webhook jobs that are done, in bounded chunks (the retention actor's queries).

Every processed coin tick leaves a job in `webhook_outbox` and its attempts in
`webhook_attempts` (~5.5 kB together); nothing else ever deletes them. Delivered
and dead jobs go once their last activity *and* their tick are older than their
status's cutoff (dead jobs are kept longer: operators read and retry them);
pending jobs never go, whatever their age.

Why the cutoff must be long (storage.config.retention_minimum_seconds): a job's
idempotency key is what keeps a re-read tick from being queued and sent again,
so a job must outlive every re-read of its tick.

Model snapshots (migration 0008) go when no remaining job refers to them. Their
age alone does not protect them: a job that refers to an old snapshot inserts
it with ON CONFLICT DO NOTHING, which neither refreshes `created_at` nor locks
the row, so a sweep could delete a snapshot that an uncommitted job is about to
refer to. Every writer of jobs that refer to snapshots takes ROW EXCLUSIVE on
`webhook_model_snapshots` (its INSERT) before it takes a job id; the sweep uses a
conflicting table lock as a barrier, so it checks the jobs up to a known id
without the lock and only the few newer ones while holding it (see
`delete_unreferenced_snapshots`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import asyncpg

from storage.db.id_bisection import last_id_older_than


# A job's last activity: its delivery, the retry it was last due for (settle leaves
# next_attempt_at there; there is no dead_at column), its creation (requeueing a
# dead job restarts it) and its last attempt, which the dispatcher logs with every
# settlement: a job that waited out an outage is attempted, found too old and
# declared dead just now, and an operator must still find it in the dead list.
# The tick's own time must be old as well: re-reads are bounded by the tick's age
# (catchup_max_age_seconds). Delivered jobs are older than $3, dead ones than $5
# (dead jobs are kept longer for operators); a NULL cutoff keeps that status.
def _older_than(job: str, cutoff: str) -> str:
    return f"""({cutoff}::timestamptz IS NOT NULL
      AND greatest({job}.created_at, {job}.next_attempt_at, {job}.delivered_at) < {cutoff}
      AND {job}.data_timestamp < {cutoff}
      AND NOT EXISTS (SELECT 1 FROM webhook_attempts r
                      WHERE r.outbox_id = {job}.id AND r.attempted_at >= {cutoff}))"""


def _done_and_old(job: str) -> str:
    return f"""(({job}.status = 'delivered' AND {_older_than(job, "$3")})
      OR ({job}.status = 'dead' AND {_older_than(job, "$5")}))"""


# One chunk: the next `limit` deletable jobs after `after` in id order, up to `bound`
# (a primary-key range scan that ends at the bound, never a scan of every young
# job). Attempts are deleted in the same statement rather than by ON DELETE CASCADE
# alone: measured the same speed (40,000 jobs with 80,000 attempts in ~1 s either
# way, chunks of 5,000), and the statement can report how many attempts went.
# SKIP LOCKED: a dead job an operator is requeueing right now is left alone, and
# the DELETE checks the conditions again on the rows it finally removes.
_DELETE_JOBS_SQL = f"""
WITH doomed AS (
    SELECT w.id FROM webhook_outbox w
    WHERE w.id > $1 AND w.id <= $2
      AND {_done_and_old("w")}
    ORDER BY w.id
    LIMIT $4
    FOR UPDATE SKIP LOCKED
),
attempts AS (
    DELETE FROM webhook_attempts a USING doomed d WHERE a.outbox_id = d.id RETURNING a.id
),
jobs AS (
    DELETE FROM webhook_outbox o USING doomed d
    WHERE o.id = d.id
      AND {_done_and_old("o")}
    RETURNING o.id
)
SELECT (SELECT count(*) FROM doomed) AS scanned,
       (SELECT max(id) FROM doomed) AS last_id,
       (SELECT count(*) FROM jobs) AS jobs,
       (SELECT count(*) FROM attempts) AS attempts
"""


@dataclass(frozen=True, slots=True)
class JobsChunk:
    """What one chunk deleted; `scanned < limit` means nothing deletable is left."""

    scanned: int  # jobs picked for deletion
    last_id: int | None  # the highest of them: the next chunk starts after it
    jobs: int
    attempts: int


async def job_id_bound(conn: asyncpg.Connection, cutoff: datetime) -> int:
    """The highest job id created before `cutoff`, by bisection over the primary key.

    A job deletable at `cutoff` was created before it, and ids grow with
    `created_at` (up to a transaction's length, and a requeued dead job restarts
    its `created_at`: a bound a little low leaves a few jobs for the next pass),
    so chunks scan ids up to this bound instead of every young job to find none.
    ~30 index lookups instead of a scan of a table that holds a day of jobs.
    """
    return await last_id_older_than(
        conn, table="webhook_outbox", time_column="created_at", moment=cutoff
    )


async def delete_jobs_chunk(
    conn: asyncpg.Connection,
    *,
    cutoff: datetime | None,
    dead_cutoff: datetime | None,
    after: int,
    bound: int,
    limit: int,
) -> JobsChunk:
    """Delete up to `limit` done jobs (and their attempts) with ids in (`after`,
    `bound`] whose last activity and tick are older than `cutoff` (delivered jobs) or
    `dead_cutoff` (dead ones); None keeps the jobs of that status.

    One statement, one short transaction: locks a chunk's rows for milliseconds.
    """
    row = await conn.fetchrow(_DELETE_JOBS_SQL, after, bound, cutoff, limit, dead_cutoff)
    assert row is not None
    return JobsChunk(
        scanned=int(row["scanned"]),
        last_id=None if row["last_id"] is None else int(row["last_id"]),
        jobs=int(row["jobs"]),
        attempts=int(row["attempts"]),
    )


# ---- predictions ------------------------------------------------------------------

# Ticks older than the cutoff whose every price path is judged, oldest first through
# their data-time index (their outcomes go with them, ON DELETE CASCADE). A tick with a
# pending path stays (the evaluator still needs it; it goes on a later pass once
# judged), and SKIP LOCKED leaves the ticks a writer is appending to alone. Counted in
# predictions (the tick's elements whose model version still exists).
_DELETE_PREDICTIONS_SQL = """
WITH doomed AS (
    SELECT t.id FROM prediction_ticks t
    WHERE t.data_timestamp < $1
      AND NOT EXISTS (SELECT 1 FROM prediction_due d WHERE d.tick_id = t.id)
    ORDER BY t.data_timestamp
    LIMIT $2
    FOR UPDATE SKIP LOCKED
),
gone AS (
    DELETE FROM prediction_ticks t USING doomed d WHERE t.id = d.id
    RETURNING t.target_ids
)
SELECT (SELECT count(*) FROM gone) AS ticks,
       (SELECT count(*) FROM gone, unnest(gone.target_ids) AS x(target_id)
        WHERE EXISTS (SELECT 1 FROM prediction_targets g WHERE g.id = x.target_id))
       AS predictions
"""


class DeletedTicks(NamedTuple):
    ticks: int  # fewer than the limit: nothing deletable is left
    predictions: int


async def delete_predictions_chunk(
    conn: asyncpg.Connection, *, cutoff: datetime, limit: int
) -> DeletedTicks:
    """Delete up to `limit` judged coin ticks older than `cutoff` with their predictions."""
    row = await conn.fetchrow(_DELETE_PREDICTIONS_SQL, cutoff, limit)
    assert row is not None
    return DeletedTicks(int(row["ticks"]), int(row["predictions"]))


# ---- model snapshots -------------------------------------------------------------

_OLD_SNAPSHOTS_SQL = """
SELECT key, created_at FROM webhook_model_snapshots
WHERE created_at < $1 AND (created_at, key) > ($2, $3)
ORDER BY created_at, key
LIMIT $4
"""

# How a job's payload refers to a snapshot: {"predictions": [{"model": {"snapshot": key}}]}
# (actors.webhooks.payload.snapshot_reference). The payload is json, the text as written
# (migration 0027): the quoted key (64 hex digits) found anywhere in it counts. A collector
# value that happened to quote one (a coin id) would only keep a snapshot longer.
_REFERS = """strpos(o.payload::text, '"' || {key} || '"') > 0"""

_UNREFERENCED_UP_TO_SQL = f"""
SELECT c.key FROM unnest($1::text[]) AS c(key)
WHERE NOT EXISTS (
    SELECT 1 FROM webhook_outbox o WHERE o.id <= $2 AND {_REFERS.format(key="c.key")}
)
"""

_DELETE_SNAPSHOTS_SQL = f"""
DELETE FROM webhook_model_snapshots s
WHERE s.key = ANY($1::text[]) AND s.created_at < $3
  AND NOT EXISTS (
    SELECT 1 FROM webhook_outbox o WHERE o.id > $2 AND {_REFERS.format(key="s.key")}
)
RETURNING s.key
"""


async def _barrier_job_id(conn: asyncpg.Connection, lock_timeout_ms: int) -> int:
    """The highest job id once every transaction that may refer to a snapshot in a job
    has ended: SHARE waits for the ROW EXCLUSIVE of their snapshot INSERT. Every job
    that refers to a snapshot is then either at or below this id and committed, or
    gets a higher id later."""
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
        await conn.execute("LOCK TABLE webhook_model_snapshots IN SHARE MODE")
        return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM webhook_outbox"))


async def delete_unreferenced_snapshots(
    conn: asyncpg.Connection,
    *,
    cutoff: datetime,
    limit: int,
    lock_timeout_seconds: float = 5.0,
) -> int:
    """Delete the model snapshots created before `cutoff` that no job refers to;
    returns how many went. `limit` snapshots are examined per round.

    The expensive part (is a snapshot referred to by any of the jobs up to the
    barrier id?) runs without a lock; the final DELETE holds a lock that makes
    writers of new jobs wait, but checks only jobs newer than the barrier. A lock
    that cannot be had within `lock_timeout_seconds` raises
    asyncpg.LockNotAvailableError and deletes nothing more.
    """
    lock_ms = max(1, int(lock_timeout_seconds * 1000))
    deleted = 0
    after: tuple[datetime, str] = (datetime.min.replace(tzinfo=cutoff.tzinfo), "")
    while True:
        rows = await conn.fetch(_OLD_SNAPSHOTS_SQL, cutoff, *after, limit)
        if not rows:
            return deleted
        after = (rows[-1]["created_at"], rows[-1]["key"])
        keys = [r["key"] for r in rows]
        barrier = await _barrier_job_id(conn, lock_ms)
        unreferenced = [r["key"] for r in await conn.fetch(_UNREFERENCED_UP_TO_SQL, keys, barrier)]
        if unreferenced:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = {lock_ms}")
                # Conflicts with writers' ROW EXCLUSIVE and with another sweep.
                await conn.execute("LOCK TABLE webhook_model_snapshots IN SHARE ROW EXCLUSIVE MODE")
                gone = await conn.fetch(_DELETE_SNAPSHOTS_SQL, unreferenced, barrier, cutoff)
            deleted += len(gone)
        if len(rows) < limit:
            return deleted
