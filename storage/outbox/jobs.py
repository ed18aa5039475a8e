"""Queries on `webhook_outbox`: the durable queue of webhook deliveries.

Jobs are written in the transaction that stores the predictions they report
(`enqueue`), so a restart loses nothing. Dispatchers `claim` due jobs with
`FOR UPDATE SKIP LOCKED` and a lease (`locked_until`): two dispatchers never
hold the same job, and the jobs of a crashed one come back when its lease ends.
The lease value a claim wrote is the fence for every later write: a dispatcher
whose lease expired (and whose job was claimed again) cannot settle it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg

from storage.db.pool import int_array_literal
from storage.outbox.attempts import AttemptRecord, attempt_arrays
from storage.outbox.attempts import insert_sql as insert_attempts_sql

JobStatus = Literal["pending", "delivered", "dead", "waiting"]
# Jobs an operator may send again: given up, or parked on a missing endpoint.
REQUEUEABLE: tuple[JobStatus, ...] = ("dead", "waiting")


@dataclass(frozen=True, slots=True)
class ModelSnapshot:
    """A model's definition as a webhook reports it, stored once (migration 0008)."""

    key: str  # sha256 of json
    json: str


@dataclass(frozen=True, slots=True)
class OutboxJob:
    """A delivery to add to the outbox (see `actors.webhooks.payload.tick_jobs`)."""

    idempotency_key: str
    target_url: str
    coin_id: str
    data_timestamp: datetime
    active_model_ids: tuple[int, ...]
    model_ids: tuple[int, ...]
    payload: str  # the CONTRACTS.md section 4 body as JSON text (stored as json, as written)
    # The models the payload refers to by key instead of holding them (migration 0008).
    snapshots: tuple[ModelSnapshot, ...] = ()
    # The payload's parts as a claim reads them back (`ClaimedJob`), so a job leased by
    # the transaction that queues it (`enqueue_leased`) is handed to a dispatcher as is.
    timestamp: str = ""
    items_json: str = ""
    item_count: int = 0
    alerts_count: int = 0
    version: str = ""


@dataclass(frozen=True, slots=True)
class Lease:
    """A claimed job and the lease value that proves this dispatcher still holds it."""

    job_id: int
    locked_until: datetime


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A leased job with its payload in pieces of JSON text, ready to be merged.

    The dispatcher concatenates the `items_json` of the jobs of one coin tick
    into one POST body; decoding and re-encoding whole payloads in Python was a
    large share of the service's CPU.
    """

    id: int
    idempotency_key: str
    target_url: str
    coin_id: str
    data_timestamp: datetime
    active_model_ids: tuple[int, ...]
    model_ids: tuple[int, ...]
    timestamp: str  # payload.timestamp
    items_json: str  # payload.predictions as JSON text, without the brackets
    item_count: int  # len(payload.predictions)
    alerts_count: int  # payload.metadata.alerts_count
    version: str  # payload.metadata.version
    attempts: int  # finished attempts before this one
    created_at: datetime
    locked_until: datetime
    first_attempt_at: datetime | None = None  # None before the first attempt
    # The batch this job is sent in (batched delivery, migration 0023); None: per tick.
    batch_key: str | None = None

    @property
    def lease(self) -> Lease:
        return Lease(self.id, self.locked_until)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A job as the API shows it (dead list, status pages)."""

    id: int
    idempotency_key: str
    target_url: str
    coin_id: str
    data_timestamp: datetime
    active_model_ids: tuple[int, ...]
    model_ids: tuple[int, ...]
    payload: dict[str, Any]
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    last_status_code: int | None
    created_at: datetime
    delivered_at: datetime | None
    last_attempt_at: datetime | None
    first_attempt_at: datetime | None


def enqueue_sql(first_param: int = 1, where: str = "") -> str:
    """The idempotent multi-row INSERT of jobs, its arrays (see `job_arrays`) numbered
    from `first_param`, with an optional WHERE over the job columns j(k, u, c, t, ...)."""
    types = ("text", "text", "text", "timestamptz", "text", "text", "text")
    arrays = ", ".join(f"${first_param + i}::{t}[]" for i, t in enumerate(types))
    return f"""
INSERT INTO webhook_outbox (idempotency_key, target_url, coin_id, data_timestamp,
                            active_model_ids, model_ids, payload)
SELECT k, u, c, t, a::bigint[], m::bigint[], p::json
FROM unnest({arrays}) AS j(k, u, c, t, a, m, p)
{where}
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id
"""


def snapshots_sql(first_param: int = 1) -> str:
    """The idempotent INSERT of model snapshots (`snapshot_arrays`), numbered from
    `first_param`: queued in the statement or transaction of the jobs that refer to them."""
    return f"""
INSERT INTO webhook_model_snapshots (key, model_json)
SELECT * FROM unnest(${first_param}::text[], ${first_param + 1}::text[]) AS s(key, json)
-- Key order: every batch queues the same models' snapshots, and two storing transactions
-- inserting new ones (after a model change) in different orders could deadlock. (Jobs
-- need no such order: the tick rows, locked first in key order, guard their keys.)
ORDER BY key
ON CONFLICT (key) DO NOTHING
"""


# The jobs and the snapshots they refer to in ONE statement, a round trip fewer per
# batch than two. Retention's sweep stays safe (storage.outbox.retention): a statement
# takes its locks, ROW EXCLUSIVE on webhook_model_snapshots among them, before it runs,
# so before it draws a job id, as the sweep's barrier needs.
_ENQUEUE_SQL = f"WITH snapshots AS ({snapshots_sql(8)})\n{enqueue_sql()}"


def snapshot_arrays(jobs: Sequence[OutboxJob]) -> list[list[str]]:
    """The distinct snapshots of the jobs as (keys, texts), `snapshots_sql`'s parameters."""
    snapshots = {s.key: s.json for job in jobs for s in job.snapshots}
    return [list(snapshots), list(snapshots.values())]


def job_arrays(jobs: Sequence[OutboxJob]) -> list[list[Any]]:
    """The jobs as one array per column, in `enqueue_sql`'s parameter order."""
    return [
        [j.idempotency_key for j in jobs],
        [j.target_url for j in jobs],
        [j.coin_id for j in jobs],
        [j.data_timestamp for j in jobs],
        [int_array_literal(j.active_model_ids) for j in jobs],
        [int_array_literal(j.model_ids) for j in jobs],
        [j.payload for j in jobs],
    ]


async def enqueue(conn: asyncpg.Connection, jobs: Sequence[OutboxJob]) -> int:
    """Add jobs in the caller's transaction; returns how many were new.

    A job whose idempotency key exists is skipped, so re-processing a tick never
    makes a second delivery.
    """
    if not jobs:
        return 0
    rows = await conn.fetch(_ENQUEUE_SQL, *job_arrays(jobs), *snapshot_arrays(jobs))
    return len(rows)


# The batcher's jobs, leased (`l`) to the dispatcher of the same process in the
# transaction that queues them: that dispatcher sends them without a claim (a query over
# the due rows and a second row version per job). The lease is the fence as for a claim:
# if the process dies, the jobs come back when it ends and any dispatcher claims them.
# With the snapshots, in one statement as `_ENQUEUE_SQL`. A leased job may come with
# its batch (batched delivery: `b`), recorded here as `fix_batches` records a claim's.
_ENQUEUE_LEASED_INSERT = """
INSERT INTO webhook_outbox (idempotency_key, target_url, coin_id, data_timestamp,
                            active_model_ids, model_ids, payload, locked_until, batch_key)
SELECT k, u, c, t, a::bigint[], m::bigint[], p::json,
       CASE WHEN l THEN clock_timestamp() + make_interval(secs => $9) END,
       CASE WHEN l THEN b END
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[],
            $7::text[], $8::bool[], $12::text[]) AS j(k, u, c, t, a, m, p, l, b)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING idempotency_key, id, created_at, locked_until, batch_key
"""
_ENQUEUE_LEASED_SQL = f"WITH snapshots AS ({snapshots_sql(10)}){_ENQUEUE_LEASED_INSERT}"
_ENQUEUE_LEASED_PARAMS = 12


@dataclass(frozen=True, slots=True)
class AlsoWrite:
    """A write to another table that the statement queueing the jobs makes too: `sql`
    gives its text with its parameters numbered from the number it is called with.

    Each round trip to PostgreSQL costs both processes a wake-up (on this project's
    2-core VM ~0.1 ms each side, more than most statements of a batch); the storing
    transaction's last write rides along with the jobs instead of a statement of its own.
    """

    sql: Callable[[int], str]
    args: Sequence[Any]


@functools.lru_cache(maxsize=8)
def _enqueue_leased_also_sql(also: Callable[[int], str]) -> str:
    return (
        f"WITH snapshots AS ({snapshots_sql(10)}),\n"
        f"also AS ({also(_ENQUEUE_LEASED_PARAMS + 1)}){_ENQUEUE_LEASED_INSERT}"
    )


@dataclass(frozen=True, slots=True)
class LeasePlan:
    """Which of a batch's jobs the batcher leases to its dispatcher (`enqueue_leased`),
    for how long, and in which batch each goes (batched delivery; None: one per tick)."""

    leased: list[bool]
    lease_seconds: float
    batch_keys: list[str | None]


async def enqueue_leased(
    conn: asyncpg.Connection,
    jobs: Sequence[OutboxJob],
    leased: Sequence[bool],
    *,
    lease_seconds: float,
    batch_keys: Sequence[str | None] | None = None,
    also: AlsoWrite | None = None,
) -> tuple[int, list[ClaimedJob]]:
    """Add jobs in the caller's transaction, the `leased` ones under a lease of
    `lease_seconds` (and in the batch `batch_keys` gives, if any); returns (how many were
    new, the new leased ones as claimed jobs). `also` is written by the same statement.

    The caller hands the leased jobs to its dispatcher once the transaction committed;
    the others wait for a claim. A job whose key exists is skipped, as by `enqueue`.
    """
    if not jobs:
        if also is not None:
            raise ValueError("AlsoWrite needs jobs to ride along with")
        return 0, []
    # Only a job that carries its payload's parts can be sent without reading it back.
    flags = [bool(lease) and job.item_count > 0 for job, lease in zip(jobs, leased, strict=True)]
    batches = [None] * len(jobs) if batch_keys is None else list(batch_keys)
    if len(batches) != len(jobs):
        raise ValueError(f"{len(batches)} batch keys for {len(jobs)} jobs")
    args = [*job_arrays(jobs), flags, float(lease_seconds), *snapshot_arrays(jobs), batches]
    assert len(args) == _ENQUEUE_LEASED_PARAMS
    if also is None:
        rows = await conn.fetch(_ENQUEUE_LEASED_SQL, *args)
    else:
        rows = await conn.fetch(_enqueue_leased_also_sql(also.sql), *args, *also.args)
    by_key = {job.idempotency_key: job for job in jobs}
    claimed = [
        ClaimedJob(
            id=r["id"],
            idempotency_key=job.idempotency_key,
            target_url=job.target_url,
            coin_id=job.coin_id,
            data_timestamp=job.data_timestamp,
            active_model_ids=job.active_model_ids,
            model_ids=job.model_ids,
            timestamp=job.timestamp,
            items_json=job.items_json,
            item_count=job.item_count,
            alerts_count=job.alerts_count,
            version=job.version,
            attempts=0,
            created_at=r["created_at"],
            locked_until=r["locked_until"],
            batch_key=r["batch_key"],
        )
        for r in rows
        if r["locked_until"] is not None
        for job in (by_key[r["idempotency_key"]],)
    ]
    return len(rows), claimed


# The due rows are taken in (next_attempt_at, id) order from the partial index of
# migration 0006, so a claim reads about `limit` index entries instead of sorting
# every due row. `$1` counts due rows, i.e. about one POST each: the other models'
# jobs of the same tick come along as mates.
_CLAIM_SQL = """
WITH due AS (
    SELECT id, target_url, coin_id, data_timestamp, batch_key FROM webhook_outbox
    WHERE status = 'pending'
      AND next_attempt_at <= now()
      AND (locked_until IS NULL OR locked_until <= now())
      AND NOT (target_url = ANY($2::text[]))
    ORDER BY next_attempt_at, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
),
-- The other models' jobs for the same URL and coin tick travel in the same POST
-- (CONTRACTS.md: one POST per URL per coin): claim them with the due ones.
mates AS (
    SELECT o.id FROM webhook_outbox o
    JOIN (SELECT DISTINCT target_url, coin_id, data_timestamp FROM due) k
      ON o.coin_id = k.coin_id AND o.data_timestamp = k.data_timestamp
     AND o.target_url = k.target_url
    WHERE o.status = 'pending'
      AND o.next_attempt_at <= now()
      AND (o.locked_until IS NULL OR o.locked_until <= now())
    FOR UPDATE OF o SKIP LOCKED
),
-- The other jobs of a batch fixed at an earlier attempt (batched delivery) travel
-- together again: same ticks, same body, same Idempotency-Key.
batch_mates AS (
    SELECT o.id FROM webhook_outbox o
    WHERE o.batch_key IN (SELECT batch_key FROM due WHERE batch_key IS NOT NULL)
      AND o.batch_key IS NOT NULL
      AND o.status = 'pending'
      AND o.next_attempt_at <= now()
      AND (o.locked_until IS NULL OR o.locked_until <= now())
    FOR UPDATE OF o SKIP LOCKED
),
picked AS (SELECT id FROM due UNION SELECT id FROM mates UNION SELECT id FROM batch_mates),
leased AS (
UPDATE webhook_outbox AS o
SET locked_until = clock_timestamp() + make_interval(secs => $3)
FROM picked
WHERE o.id = picked.id
RETURNING o.id, o.idempotency_key, o.target_url, o.coin_id, o.data_timestamp,
          o.active_model_ids, o.model_ids, o.attempts, o.created_at, o.locked_until,
          o.first_attempt_at, o.batch_key, o.payload,
          -- More due beyond this claim? Only asked when the limit was reached; the
          -- other models' jobs of the claimed ticks (mates) do not count.
          -- Read in due order (index), so it stops right after the rows just claimed.
          CASE WHEN (SELECT count(*) FROM due) >= $1 THEN coalesce((
              SELECT true FROM webhook_outbox w
              WHERE w.status = 'pending'
                AND w.next_attempt_at <= now()
                AND (w.locked_until IS NULL OR w.locked_until <= now())
                AND NOT (w.target_url = ANY($2::text[]))
                AND w.id NOT IN (SELECT id FROM picked)
              ORDER BY w.next_attempt_at, w.id
              LIMIT 1
          ), false) ELSE false END AS more_due
)
-- The payload (json, the text as written) parsed once per job: each json operator on
-- the column would decompress it and parse it again (80 -> 63 us per claimed job).
-- `predictions` comes back as the text it was written with.
SELECT l.id, l.idempotency_key, l.target_url, l.coin_id, l.data_timestamp,
       l.active_model_ids, l.model_ids, l.attempts, l.created_at, l.locked_until,
       l.first_attempt_at, l.batch_key, l.more_due,
       p."timestamp" AS payload_timestamp,
       p.predictions::text AS items_json,
       json_array_length(p.predictions) AS item_count,
       (p.metadata->>'alerts_count')::int AS alerts_count,
       p.metadata->>'version' AS version
FROM leased AS l
CROSS JOIN LATERAL json_to_record(l.payload) AS p("timestamp" text, predictions json, metadata json)
"""


# The claim is planned again every REPLAN_SECONDS (its text changes, so asyncpg prepares
# it anew and PostgreSQL makes custom plans before it settles on a generic one). A
# generic plan made while the outbox was nearly empty (a service started on a new
# database) leases the claimed rows by reading the whole table, and PostgreSQL keeps
# it until the next ANALYZE: in the 1000-coin pipeline bench that was ~5 000 pages per
# claim and most of PostgreSQL's time. Any plan made on a few dozen jobs is sound.
REPLAN_SECONDS = 20.0


def claim_sql(now: float, replan_seconds: float = REPLAN_SECONDS) -> str:
    """The claim's text for the planning period that `now` (time.monotonic()) falls in."""
    return f"{_CLAIM_SQL}-- planning period {int(now // replan_seconds)}\n"


@dataclass(frozen=True, slots=True)
class Claim:
    """What one claim leased, and whether the limit cut it short (more is due)."""

    jobs: list[ClaimedJob]
    full: bool


async def claim_due(
    conn: asyncpg.Connection,
    *,
    limit: int,
    lease_seconds: float,
    exclude_urls: Sequence[str] = (),
    replan_seconds: float = REPLAN_SECONDS,
) -> Claim:
    """Lease up to `limit` due jobs (oldest due first), skipping `exclude_urls`, plus the
    due jobs of the same URL and coin tick (so one POST carries every model).

    `full` says the limit left due jobs behind, so the caller knows whether to
    claim again as soon as it has room, without a second query.
    """
    if limit <= 0:
        return Claim([], False)
    sql = claim_sql(time.monotonic(), replan_seconds)
    rows = await conn.fetch(sql, limit, list(exclude_urls), float(lease_seconds))
    jobs = [
        ClaimedJob(
            id=r["id"],
            idempotency_key=r["idempotency_key"],
            target_url=r["target_url"],
            coin_id=r["coin_id"],
            data_timestamp=r["data_timestamp"],
            active_model_ids=tuple(r["active_model_ids"]),
            model_ids=tuple(r["model_ids"]),
            timestamp=r["payload_timestamp"],
            items_json=r["items_json"][1:-1],  # '[a, b]' -> 'a, b'
            item_count=r["item_count"],
            alerts_count=r["alerts_count"],
            version=r["version"],
            attempts=r["attempts"],
            created_at=r["created_at"],
            locked_until=r["locked_until"],
            first_attempt_at=r["first_attempt_at"],
            batch_key=r["batch_key"],
        )
        for r in rows
    ]
    jobs.sort(key=lambda j: j.id)
    return Claim(jobs, bool(rows and rows[0]["more_due"]))


_NEXT_DUE_SQL = """
SELECT extract(epoch FROM (greatest(next_attempt_at, now()) - now()))::float8
FROM webhook_outbox
WHERE status = 'pending' AND (locked_until IS NULL OR locked_until <= now())
  AND NOT (target_url = ANY($1::text[]))
ORDER BY next_attempt_at
LIMIT 1
"""


async def fix_batches(conn: asyncpg.Connection, members: Sequence[tuple[Lease, str]]) -> int:
    """Record the batch of each claimed job (batched delivery) before it is first sent,
    so that every later attempt sends the same jobs together; the lease is the fence."""
    if not members:
        return 0
    result = await conn.execute(
        """
        UPDATE webhook_outbox AS o SET batch_key = l.batch_key
        FROM unnest($1::bigint[], $2::timestamptz[], $3::text[]) AS l(id, locked_until, batch_key)
        WHERE o.id = l.id AND o.locked_until = l.locked_until AND o.status = 'pending'
        """,
        [lease.job_id for lease, _ in members],
        [lease.locked_until for lease, _ in members],
        [key for _, key in members],
    )
    return int(result.split()[-1])


async def load_snapshots(conn: asyncpg.Connection, keys: Sequence[str]) -> dict[str, str]:
    """Model JSON texts by snapshot key (the ones that exist)."""
    rows = await conn.fetch(
        "SELECT key, model_json FROM webhook_model_snapshots WHERE key = ANY($1::text[])",
        list(keys),
    )
    return {r["key"]: r["model_json"] for r in rows}


async def seconds_until_next_due(
    conn: asyncpg.Connection, *, exclude_urls: Sequence[str] = ()
) -> float | None:
    """Seconds until the earliest unleased pending job is due (0 if one is due now)."""
    value = await conn.fetchval(_NEXT_DUE_SQL, list(exclude_urls))
    return None if value is None else float(value)


# One UPDATE for every settlement of a flush, whatever their kinds: each row brings
# its own status, delay, error and status code. The (id, locked_until) pair is the
# fence; RETURNING tells which leases were still ours.
_SETTLE_SQL = """
UPDATE webhook_outbox AS o
SET status = l.status,
    attempts = o.attempts + 1,
    locked_until = NULL,
    next_attempt_at = CASE WHEN l.status = 'pending' THEN now() + make_interval(secs => l.delay)
                           ELSE o.next_attempt_at END,
    delivered_at = CASE WHEN l.status = 'delivered' THEN now() ELSE o.delivered_at END,
    last_error = l.error,
    last_status_code = l.status_code,
    first_attempt_at = coalesce(o.first_attempt_at, l.attempted_at)
FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::float8[], $5::text[], $6::int[],
            $7::timestamptz[])
     AS l(id, locked_until, status, delay, error, status_code, attempted_at)
WHERE o.id = l.id AND o.locked_until = l.locked_until AND o.status = 'pending'
RETURNING o.id
"""


@dataclass(frozen=True, slots=True)
class Settlement:
    """How one attempt of one job ended; `status` 'pending' means retry after the delay,
    'waiting' that the job waits for its missing endpoint."""

    lease: Lease
    status: JobStatus
    delay_seconds: float = 0.0
    error: str | None = None
    status_code: int | None = None
    attempted_at: datetime | None = None  # when the POST started


# The settlements and the attempts they end, logged in the same statement: a flush of
# the dispatcher is then one statement (its own transaction) instead of BEGIN, two
# statements and COMMIT.
_SETTLE_LOGGED_SQL = f"""
WITH settled AS ({_SETTLE_SQL}),
logged AS ({insert_attempts_sql(8)})
SELECT id FROM settled
"""


async def settle(
    conn: asyncpg.Connection,
    settlements: Sequence[Settlement],
    attempts: Sequence[AttemptRecord] = (),
) -> list[int]:
    """Write many settlements with one statement, and log `attempts` (all of them,
    whether their lease held or not) in it; returns the ids whose lease still held."""
    if not settlements and not attempts:
        return []
    arrays = [
        [s.lease.job_id for s in settlements],
        [s.lease.locked_until for s in settlements],
        [s.status for s in settlements],
        [float(s.delay_seconds) for s in settlements],
        [s.error for s in settlements],
        [s.status_code for s in settlements],
        [s.attempted_at for s in settlements],
    ]
    if attempts:
        rows = await conn.fetch(_SETTLE_LOGGED_SQL, *arrays, *attempt_arrays(attempts))
    else:
        rows = await conn.fetch(_SETTLE_SQL, *arrays)
    return sorted(r["id"] for r in rows)


async def models_by_key(conn: asyncpg.Connection, keys: Sequence[str]) -> dict[str, list[int]]:
    """The active model ids of the jobs with these idempotency keys (the ones that exist)."""
    rows = await conn.fetch(
        "SELECT idempotency_key, active_model_ids FROM webhook_outbox"
        " WHERE idempotency_key = ANY($1::text[])",
        list(keys),
    )
    return {r["idempotency_key"]: list(r["active_model_ids"]) for r in rows}


async def release(conn: asyncpg.Connection, leases: Sequence[Lease]) -> list[int]:
    """Hand claimed jobs back without an attempt (stopping, or the lease ran low unstarted)."""
    if not leases:
        return []
    rows = await conn.fetch(
        """
        UPDATE webhook_outbox AS o SET locked_until = NULL
        FROM unnest($1::bigint[], $2::timestamptz[]) AS l(id, locked_until)
        WHERE o.id = l.id AND o.locked_until = l.locked_until AND o.status = 'pending'
        RETURNING o.id
        """,
        [lease.job_id for lease in leases],
        [lease.locked_until for lease in leases],
    )
    return sorted(r["id"] for r in rows)


async def count_status(conn: asyncpg.Connection, status: JobStatus) -> int:
    """Jobs of one status."""
    return int(await conn.fetchval("SELECT count(*) FROM webhook_outbox WHERE status = $1", status))


async def outbox_depth(conn: asyncpg.Connection) -> int:
    """Pending jobs (due or waiting for a retry)."""
    value = await conn.fetchval("SELECT count(*) FROM webhook_outbox WHERE status = 'pending'")
    return int(value)


_ROW_COLUMNS = """
o.id, o.idempotency_key, o.target_url, o.coin_id, o.data_timestamp, o.active_model_ids,
o.model_ids, webhook_payload_expanded(o.payload::jsonb) AS payload, o.status, o.attempts,
o.next_attempt_at, o.last_error, o.last_status_code, o.created_at, o.delivered_at,
(SELECT max(a.attempted_at) FROM webhook_attempts a WHERE a.outbox_id = o.id) AS last_attempt_at,
o.first_attempt_at
"""


def _outbox_row(r: asyncpg.Record) -> OutboxRow:
    return OutboxRow(
        id=r["id"],
        idempotency_key=r["idempotency_key"],
        target_url=r["target_url"],
        coin_id=r["coin_id"],
        data_timestamp=r["data_timestamp"],
        active_model_ids=tuple(r["active_model_ids"]),
        model_ids=tuple(r["model_ids"]),
        payload=r["payload"],
        status=r["status"],
        attempts=r["attempts"],
        next_attempt_at=r["next_attempt_at"],
        last_error=r["last_error"],
        last_status_code=r["last_status_code"],
        created_at=r["created_at"],
        delivered_at=r["delivered_at"],
        last_attempt_at=r["last_attempt_at"],
        first_attempt_at=r["first_attempt_at"],
    )


async def get_job(conn: asyncpg.Connection, job_id: int) -> OutboxRow | None:
    row = await conn.fetchrow(
        f"SELECT {_ROW_COLUMNS} FROM webhook_outbox o WHERE o.id = $1", job_id
    )
    return None if row is None else _outbox_row(row)


async def list_jobs(
    conn: asyncpg.Connection,
    *,
    status: JobStatus,
    limit: int,
    offset: int,
    active_model_id: int | None = None,
) -> tuple[int, list[OutboxRow]]:
    """(total, one page) of the jobs of one status, newest first; optionally one model's."""
    model_filter = [] if active_model_id is None else [active_model_id]
    total = await conn.fetchval(
        "SELECT count(*) FROM webhook_outbox WHERE status = $2"
        " AND active_model_ids @> $1::bigint[]",
        model_filter,
        status,
    )
    rows = await conn.fetch(
        f"SELECT {_ROW_COLUMNS} FROM webhook_outbox o"
        " WHERE o.status = $4 AND o.active_model_ids @> $1::bigint[]"
        " ORDER BY o.id DESC LIMIT $2 OFFSET $3",
        model_filter,
        limit,
        offset,
        status,
    )
    return int(total), [_outbox_row(r) for r in rows]


async def list_dead(
    conn: asyncpg.Connection,
    *,
    limit: int,
    offset: int,
    active_model_id: int | None = None,
) -> tuple[int, list[OutboxRow]]:
    """(total, one page) of dead jobs, newest first; optionally only one model's."""
    return await list_jobs(
        conn, status="dead", limit=limit, offset=offset, active_model_id=active_model_id
    )


# A requeued job gets a fresh retry budget: attempts and age reset (the maximum age is
# measured from created_at). Its earlier attempts stay in webhook_attempts, and
# first_attempt_at is kept: the receiver sees how old the alert really is.
_REQUEUE_SET = """status = 'pending', attempts = 0, created_at = now(), next_attempt_at = now(),
locked_until = NULL"""


async def requeue_dead(
    conn: asyncpg.Connection, job_id: int
) -> Literal["requeued", "not_found", "not_dead"]:
    """Make a dead or waiting job due now with a fresh retry budget."""
    requeued = await conn.fetchval(
        f"UPDATE webhook_outbox SET {_REQUEUE_SET}"
        " WHERE id = $1 AND status = ANY($2::text[]) RETURNING id",
        job_id,
        list(REQUEUEABLE),
    )
    if requeued is not None:
        return "requeued"
    exists = await conn.fetchval("SELECT true FROM webhook_outbox WHERE id = $1", job_id)
    return "not_dead" if exists else "not_found"


async def requeue_all(
    conn: asyncpg.Connection,
    statuses: Sequence[JobStatus],
    *,
    active_model_id: int | None = None,
) -> int:
    """Requeue every job of these statuses (dead, waiting), optionally one model's."""
    result = await conn.execute(
        f"UPDATE webhook_outbox SET {_REQUEUE_SET}"
        " WHERE status = ANY($1::text[]) AND active_model_ids @> $2::bigint[]",
        [s for s in statuses if s in REQUEUEABLE],
        [] if active_model_id is None else [active_model_id],
    )
    return int(result.split()[-1])


async def release_waiting(conn: asyncpg.Connection, urls: Sequence[str]) -> int:
    """The waiting jobs of URLs that answer again: due now, with a fresh budget."""
    if not urls:
        return 0
    result = await conn.execute(
        f"UPDATE webhook_outbox SET {_REQUEUE_SET}"
        " WHERE status = 'waiting' AND target_url = ANY($1::text[])",
        list(urls),
    )
    return int(result.split()[-1])


async def retarget_waiting(conn: asyncpg.Connection, default_url: str | None) -> int:
    """Move waiting jobs to the URL their models point to now (a model's own URL, else
    `default_url`), due now: only jobs whose every model points to the same URL, other
    than the one they wait on (another model's predictions never go to a URL it was
    not configured for). Called after a URL change (PATCH) and when the dispatcher
    starts (N8N_WEBHOOK_URL may have changed). A moved job leaves its batch (batched
    delivery): the batch was made for the old URL."""
    result = await conn.execute(
        f"""
        WITH moved AS (
            SELECT o.id, min(t.url) AS url
            FROM webhook_outbox o
            CROSS JOIN LATERAL (
                SELECT CASE WHEN am.n8n_enabled THEN
                    coalesce(nullif(am.n8n_webhook_url, ''), nullif($1::text, '')) END AS url
                FROM unnest(o.active_model_ids) AS m(id)
                LEFT JOIN active_models am ON am.id = m.id
            ) t
            WHERE o.status = 'waiting'
            GROUP BY o.id, o.target_url
            HAVING count(DISTINCT t.url) = 1 AND count(t.url) = count(*)
               AND min(t.url) <> o.target_url
        )
        UPDATE webhook_outbox o SET target_url = moved.url, batch_key = NULL, {_REQUEUE_SET}
        FROM moved WHERE o.id = moved.id
        """,
        default_url or "",
    )
    return int(result.split()[-1])


@dataclass(frozen=True, slots=True)
class ModelOutboxCounts:
    pending: int
    delivered: int
    dead: int
    waiting: int


async def model_outbox_counts(conn: asyncpg.Connection, active_model_id: int) -> ModelOutboxCounts:
    """Jobs that carry this model's predictions, by status."""
    row = await conn.fetchrow(
        """
        SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
               count(*) FILTER (WHERE status = 'delivered') AS delivered,
               count(*) FILTER (WHERE status = 'dead') AS dead,
               count(*) FILTER (WHERE status = 'waiting') AS waiting
        FROM webhook_outbox WHERE active_model_ids @> ARRAY[$1::bigint]
        """,
        active_model_id,
    )
    return ModelOutboxCounts(row["pending"], row["delivered"], row["dead"], row["waiting"])
