"""Queries on `webhook_attempts`: every delivery attempt, with the model ids it carried.

The service being replaced logged attempts without a model id, so nobody could
say whose alert was lost; here each attempt names its models and the per-model
n8n status is read from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg

from storage.db.pool import int_array_literal

Outcome = Literal["delivered", "retry", "failed", "dead", "wait"]
OUTCOMES: tuple[Outcome, ...] = ("delivered", "retry", "failed", "dead", "wait")


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt to write (one per job, also when jobs shared one POST)."""

    outbox_id: int
    attempt: int  # 1 for the first attempt of the job
    target_url: str
    active_model_ids: tuple[int, ...]
    model_ids: tuple[int, ...]
    status_code: int | None
    latency_ms: float | None
    error: str | None
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class AttemptRow:
    id: int
    outbox_id: int
    attempt: int
    attempted_at: datetime
    target_url: str
    active_model_ids: tuple[int, ...]
    model_ids: tuple[int, ...]
    status_code: int | None
    latency_ms: float | None
    error: str | None
    outcome: str


@dataclass(frozen=True, slots=True)
class ModelWebhookStatus:
    """What n8n-status shows for one model, from its own attempts."""

    last_attempt: AttemptRow | None
    last_success: AttemptRow | None
    last_error: AttemptRow | None
    counts: dict[str, int]  # by outcome, every outcome present


def insert_sql(first_param: int = 1) -> str:
    """One multi-row INSERT for a whole flush of attempts (executemany sends a row per
    round trip), its arrays (`attempt_arrays`) numbered from `first_param`; array
    columns as text literals (storage.db.pool.int_array_literal)."""
    types = ("bigint", "int", "text", "text", "text", "int", "float8", "text", "text")
    arrays = ", ".join(f"${first_param + i}::{t}[]" for i, t in enumerate(types))
    return f"""
INSERT INTO webhook_attempts (outbox_id, attempt, target_url, active_model_ids, model_ids,
                              status_code, latency_ms, error, outcome)
SELECT o, n, u, a::bigint[], m::bigint[], s, l, e, r
FROM unnest({arrays}) AS t(o, n, u, a, m, s, l, e, r)
"""


_INSERT_SQL = insert_sql()


def attempt_arrays(records: Sequence[AttemptRecord]) -> list[list[Any]]:
    """The attempts as one array per column, in `insert_sql`'s parameter order."""
    return [
        [r.outbox_id for r in records],
        [r.attempt for r in records],
        [r.target_url for r in records],
        [int_array_literal(r.active_model_ids) for r in records],
        [int_array_literal(r.model_ids) for r in records],
        [r.status_code for r in records],
        [r.latency_ms for r in records],
        [r.error for r in records],
        [r.outcome for r in records],
    ]


async def record_attempts(conn: asyncpg.Connection, records: Sequence[AttemptRecord]) -> None:
    """Insert the attempts with one statement, in the caller's transaction."""
    if not records:
        return
    await conn.execute(_INSERT_SQL, *attempt_arrays(records))


_COLUMNS = """id, outbox_id, attempt, attempted_at, target_url, active_model_ids, model_ids,
status_code, latency_ms, error, outcome"""


def _row(r: asyncpg.Record | None) -> AttemptRow | None:
    if r is None:
        return None
    return AttemptRow(
        id=r["id"],
        outbox_id=r["outbox_id"],
        attempt=r["attempt"],
        attempted_at=r["attempted_at"],
        target_url=r["target_url"],
        active_model_ids=tuple(r["active_model_ids"]),
        model_ids=tuple(r["model_ids"]),
        status_code=r["status_code"],
        latency_ms=r["latency_ms"],
        error=r["error"],
        outcome=r["outcome"],
    )


async def attempts_for_job(conn: asyncpg.Connection, outbox_id: int) -> list[AttemptRow]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM webhook_attempts WHERE outbox_id = $1 ORDER BY id", outbox_id
    )
    return [r for r in (_row(row) for row in rows) if r is not None]


async def model_status(conn: asyncpg.Connection, active_model_id: int) -> ModelWebhookStatus:
    """Last attempt, last success, last error and counts of the attempts that carried
    this model's predictions."""
    ids = [active_model_id]
    # `@>` (not `= ANY`) so the GIN index on active_model_ids is used.
    last = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM webhook_attempts WHERE active_model_ids @> $1::bigint[]"
        " ORDER BY id DESC LIMIT 1",
        ids,
    )
    success = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM webhook_attempts WHERE active_model_ids @> $1::bigint[]"
        " AND outcome = 'delivered' ORDER BY id DESC LIMIT 1",
        ids,
    )
    error = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM webhook_attempts WHERE active_model_ids @> $1::bigint[]"
        " AND outcome <> 'delivered' ORDER BY id DESC LIMIT 1",
        ids,
    )
    counts_rows = await conn.fetch(
        "SELECT outcome, count(*) AS n FROM webhook_attempts"
        " WHERE active_model_ids @> $1::bigint[] GROUP BY outcome",
        ids,
    )
    counts: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
    counts.update({r["outcome"]: int(r["n"]) for r in counts_rows})
    return ModelWebhookStatus(_row(last), _row(success), _row(error), counts)


@dataclass(frozen=True, slots=True)
class Losses:
    """Jobs that did not reach their receiver: what makes n8n-status and /health loud."""

    dead_recently: int  # jobs dead now whose fatal attempt is within the window
    waiting: int  # jobs parked on a missing endpoint (any age: they still wait)


# Dead jobs through the partial index of recent losing attempts (migration 0013), so
# /health never scans the week of dead jobs kept for operators.
_RECENT_DEAD = """
SELECT DISTINCT a.outbox_id FROM webhook_attempts a
JOIN webhook_outbox o ON o.id = a.outbox_id AND o.status = 'dead'
WHERE a.outcome IN ('dead', 'failed', 'wait')
  AND a.attempted_at > now() - make_interval(secs => $1)
  AND a.active_model_ids @> $2::bigint[]
"""


async def losses(
    conn: asyncpg.Connection, *, window_seconds: float, active_model_id: int | None = None
) -> Losses:
    """Dead (within the window) and waiting jobs, of one model or of all."""
    model_filter = [] if active_model_id is None else [active_model_id]
    dead = await conn.fetchval(
        f"SELECT count(*) FROM ({_RECENT_DEAD}) d", float(window_seconds), model_filter
    )
    waiting = await conn.fetchval(
        "SELECT count(*) FROM webhook_outbox WHERE status = 'waiting'"
        " AND active_model_ids @> $1::bigint[]",
        model_filter,
    )
    return Losses(int(dead), int(waiting))


async def losses_by_model(conn: asyncpg.Connection, *, window_seconds: float) -> dict[int, Losses]:
    """Per active model id: its dead (within the window) and waiting jobs; models
    without losses are left out."""
    rows = await conn.fetch(
        f"""
        SELECT m.id AS active_model_id,
               count(*) FILTER (WHERE o.status = 'dead') AS dead,
               count(*) FILTER (WHERE o.status = 'waiting') AS waiting
        FROM webhook_outbox o
        CROSS JOIN LATERAL unnest(o.active_model_ids) AS m(id)
        WHERE (o.status = 'waiting')
           OR o.id IN ({_RECENT_DEAD})
        GROUP BY m.id ORDER BY m.id
        """,
        float(window_seconds),
        [],
    )
    return {int(r["active_model_id"]): Losses(int(r["dead"]), int(r["waiting"])) for r in rows}
