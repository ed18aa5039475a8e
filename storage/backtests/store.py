"""The `backtests` and `backtest_ticks` tables: requests, progress, summaries, ticks.

A backtest is queued by the API, claimed by the runner (one at a time, `FOR
UPDATE SKIP LOCKED`), run by a worker process that reports progress here and
stops when its row is gone (DELETE is the cancel). Ticks are written with COPY.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

_COLUMNS = """id, model_id, range_from, range_to, status, ticks_done, ticks_total, summary,
error, created_at, started_at, finished_at"""

TICK_COLUMNS: tuple[str, ...] = (
    "mint",
    "timestamp",
    "probability",
    "prediction",
    "tag",
    "outcome",
    "actual_change_pct",
    "max_gain_pct",
    "max_drawdown_pct",
)
INTERRUPTED = "the service stopped while this backtest ran; request it again"


@dataclass(frozen=True, slots=True)
class BacktestRow:
    id: int
    model_id: int
    range_from: datetime | None
    range_to: datetime | None
    status: str  # queued | running | done | failed
    ticks_done: int
    ticks_total: int | None
    summary: dict[str, Any] | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


def _row(r: asyncpg.Record) -> BacktestRow:
    return BacktestRow(**dict(r))


async def create(
    conn: asyncpg.Connection, model_id: int, start: datetime | None, end: datetime | None
) -> BacktestRow:
    row = await conn.fetchrow(
        f"INSERT INTO backtests (model_id, range_from, range_to) VALUES ($1, $2, $3) "
        f"RETURNING {_COLUMNS}",
        model_id,
        start,
        end,
    )
    assert row is not None
    return _row(row)


async def get(conn: asyncpg.Connection, backtest_id: int) -> BacktestRow | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM backtests WHERE id = $1", backtest_id)
    return None if row is None else _row(row)


async def list_recent(conn: asyncpg.Connection, limit: int) -> list[BacktestRow]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM backtests ORDER BY id DESC LIMIT $1", limit)
    return [_row(r) for r in rows]


async def claim_next(conn: asyncpg.Connection) -> BacktestRow | None:
    """The oldest queued backtest, now running (None when nothing is queued)."""
    row = await conn.fetchrow(
        f"""
        UPDATE backtests SET status = 'running', started_at = now()
        WHERE id = (
            SELECT id FROM backtests WHERE status = 'queued'
            ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED
        )
        RETURNING {_COLUMNS}
        """
    )
    return None if row is None else _row(row)


async def fail_interrupted(conn: asyncpg.Connection) -> int:
    """Backtests left `running` by a service that stopped: failed, with the reason."""
    result: str = await conn.execute(
        "UPDATE backtests SET status = 'failed', error = $1, finished_at = now() "
        "WHERE status = 'running'",
        INTERRUPTED,
    )
    return int(result.rsplit(" ", 1)[-1])


async def report_progress(
    conn: asyncpg.Connection, backtest_id: int, done: int, total: int | None
) -> bool:
    """Record progress; False when the row is gone (the backtest was deleted: stop)."""
    found = await conn.fetchval(
        "UPDATE backtests SET ticks_done = $2, ticks_total = coalesce($3, ticks_total) "
        "WHERE id = $1 RETURNING id",
        backtest_id,
        done,
        total,
    )
    return found is not None


async def finish(
    conn: asyncpg.Connection,
    backtest_id: int,
    summary: dict[str, Any],
    ticks: Sequence[tuple[Any, ...]],
) -> bool:
    """Store the ticks (TICK_COLUMNS order) and the summary in one transaction."""
    async with conn.transaction():
        found = await conn.fetchval(
            "SELECT id FROM backtests WHERE id = $1 FOR UPDATE", backtest_id
        )
        if found is None:
            return False
        await conn.copy_records_to_table(
            "backtest_ticks",
            records=[(backtest_id, *t) for t in ticks],
            columns=["backtest_id", *TICK_COLUMNS],
        )
        await conn.execute(
            "UPDATE backtests SET status = 'done', summary = $2, finished_at = now(), "
            "ticks_done = greatest(ticks_done, coalesce(ticks_total, 0)) WHERE id = $1",
            backtest_id,
            summary,
        )
    return True


async def fail(conn: asyncpg.Connection, backtest_id: int, error: str) -> None:
    await conn.execute(
        "UPDATE backtests SET status = 'failed', error = $2, finished_at = now() WHERE id = $1",
        backtest_id,
        error,
    )


async def delete(conn: asyncpg.Connection, backtest_id: int) -> bool:
    result: str = await conn.execute("DELETE FROM backtests WHERE id = $1", backtest_id)
    return result.endswith(" 1")


async def exists(conn: asyncpg.Connection, backtest_id: int) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM backtests WHERE id = $1", backtest_id))


async def ticks_page(
    conn: asyncpg.Connection,
    backtest_id: int,
    *,
    limit: int,
    offset: int,
    tag: str | None = None,
    outcome: str | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """(total matching, one page) of a backtest's ticks, in time order."""
    where = (
        "backtest_id = $1 AND ($2::text IS NULL OR tag = $2) AND ($3::text IS NULL OR outcome = $3)"
    )
    total = await conn.fetchval(
        f"SELECT count(*) FROM backtest_ticks WHERE {where}", backtest_id, tag, outcome
    )
    rows = await conn.fetch(
        f'SELECT mint, "timestamp", probability, prediction, tag, outcome, actual_change_pct, '
        f"max_gain_pct, max_drawdown_pct FROM backtest_ticks WHERE {where} "
        f'ORDER BY "timestamp", mint LIMIT $4 OFFSET $5',
        backtest_id,
        tag,
        outcome,
        limit,
        offset,
    )
    return int(total), [dict(r) for r in rows]
