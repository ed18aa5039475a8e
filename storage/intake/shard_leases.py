"""Coin shards, their leases and their durable intake cursors (migration 0020).

A coin belongs to shard `shard_of(mint, SHARD_COUNT)`; a process works on the
coins of the shards it holds a lease on. Leases are rows, not advisory locks:
a row carries a generation that the storing transaction and the cursor move
check (fencing: a holder whose lease expired while it was paused cannot
commit, which a session lock taken on another connection cannot promise), it
is visible to `GET /api/shards`, and it works through transaction-pooling
proxies. The price is a heartbeat every SHARD_LEASE_SECONDS / 5.

Each shard's cursor is the intake_cursor row 'coin_metrics/<shard>': every row
of that shard up to `last_id` is processed (its predictions and webhook jobs
are committed). A new holder re-reads CURSOR_OVERLAP_ROWS ids behind it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from storage.errors import StorageError
from storage.intake.cursor import MOVE_FORWARD

CURSOR_PREFIX = "coin_metrics/"
LEGACY_CURSOR = "coin_metrics"
# pg_advisory_xact_lock key of shard configuration changes ("pp_shard" in ASCII).
CONFIG_LOCK_KEY = 0x70705F7368617264


class ShardCountMismatch(StorageError):
    """SHARD_COUNT differs from the count the database was set up with."""

    code = "shard_count_mismatch"

    def __init__(self, stored: int, wanted: int) -> None:
        super().__init__(
            f"{wanted} asked for, but the database holds {stored} shards: set"
            f" SHARD_COUNT={stored}, or stop every replica and run"
            f" `pump-predictor reshard {wanted}` (docs/scale-out.md)"
        )
        self.stored = stored
        self.wanted = wanted


class ReshardRefused(StorageError):
    """Shards are still held: changing the count under running workers would lose rows."""

    code = "shards_held"


def shard_of(mint: str | None, shard_count: int) -> int:
    """The shard of a coin: what SQL's pp_shard_of computes (first 32 bits of md5)."""
    digest = hashlib.md5((mint or "").encode(), usedforsecurity=False).hexdigest()
    return int(digest[:8], 16) % shard_count


def cursor_name(shard: int) -> str:
    return f"{CURSOR_PREFIX}{shard}"


def fair_share(shard_count: int, live_holders: int) -> int:
    """Shards one holder may hold: the count split evenly, rounded up."""
    return math.ceil(shard_count / max(live_holders, 1))


async def configure(conn: asyncpg.Connection, shard_count: int) -> int:
    """Record SHARD_COUNT at first start (with a lease row and cursor per shard, each
    cursor starting where the single cursor of an older version was); later starts
    must ask for the same count. Returns the count."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", CONFIG_LOCK_KEY)
        stored = await conn.fetchval("SELECT shard_count FROM shard_config")
        if stored is not None:
            if int(stored) != shard_count:
                raise ShardCountMismatch(int(stored), shard_count)
            return shard_count
        legacy = await conn.fetchrow(
            "SELECT last_id, last_timestamp FROM intake_cursor WHERE name = $1", LEGACY_CURSOR
        )
        await _create_shards(
            conn,
            shard_count,
            int(legacy["last_id"]) if legacy else None,
            legacy["last_timestamp"] if legacy else None,
        )
        await conn.execute("DELETE FROM intake_cursor WHERE name = $1", LEGACY_CURSOR)
        return shard_count


async def reshard(conn: asyncpg.Connection, shard_count: int) -> tuple[int, int]:
    """Change the count while nothing holds a shard: every new shard's cursor starts at
    the lowest old cursor (re-reading a little is idempotent; skipping is not).
    Returns (old count, cursor the new shards start at)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", CONFIG_LOCK_KEY)
        stored = await conn.fetchval("SELECT shard_count FROM shard_config")
        live = await conn.fetchval(
            "SELECT count(*) FROM shard_holders WHERE expires_at > now()"
        ) + await conn.fetchval(
            "SELECT count(*) FROM shard_leases WHERE holder IS NOT NULL AND expires_at > now()"
        )
        if live:
            raise ReshardRefused(
                "shards are still held by running services: stop every replica first"
                " (or wait SHARD_LEASE_SECONDS after a crash)"
            )
        low = await conn.fetchrow(
            """
            SELECT min(last_id) AS last_id, min(last_timestamp) AS last_timestamp
            FROM intake_cursor WHERE name LIKE 'coin_metrics/%'
            """
        )
        start = int(low["last_id"]) if low and low["last_id"] is not None else None
        await conn.execute("DELETE FROM shard_leases")
        await conn.execute("DELETE FROM shard_holders")
        await conn.execute("DELETE FROM intake_cursor WHERE name LIKE 'coin_metrics/%'")
        await conn.execute("DELETE FROM shard_config")
        await _create_shards(conn, shard_count, start, low["last_timestamp"] if low else None)
        return (int(stored) if stored is not None else 0), start or 0


async def _create_shards(
    conn: asyncpg.Connection,
    shard_count: int,
    cursor: int | None,
    cursor_timestamp: datetime | None,
) -> None:
    await conn.execute("INSERT INTO shard_config (shard_count) VALUES ($1)", shard_count)
    await conn.execute(
        "INSERT INTO shard_leases (shard) SELECT generate_series(0, $1::int - 1)", shard_count
    )
    if cursor is not None:
        await conn.execute(
            """
            INSERT INTO intake_cursor (name, last_id, last_timestamp)
            SELECT $1 || s, $2, $3 FROM generate_series(0, $4::int - 1) AS s
            """,
            CURSOR_PREFIX,
            cursor,
            cursor_timestamp,
            shard_count,
        )


@dataclass(frozen=True, slots=True)
class Heartbeat:
    held: dict[int, int]  # shard -> generation, as the database has it now
    live_holders: int


async def heartbeat(
    conn: asyncpg.Connection, holder: str, host: str, pid: int, lease_seconds: float
) -> Heartbeat:
    """Say this holder is alive, extend its leases; returns what it still holds."""
    async with conn.transaction():
        await conn.execute(
            """
            INSERT INTO shard_holders (holder, host, pid, expires_at)
            VALUES ($1, $2, $3, now() + make_interval(secs => $4))
            ON CONFLICT (holder) DO UPDATE SET expires_at = excluded.expires_at
            """,
            holder,
            host,
            pid,
            lease_seconds,
        )
        rows = await conn.fetch(
            """
            UPDATE shard_leases SET expires_at = now() + make_interval(secs => $2)
            WHERE holder = $1 RETURNING shard, generation
            """,
            holder,
            lease_seconds,
        )
        live = await conn.fetchval("SELECT count(*) FROM shard_holders WHERE expires_at > now()")
        # Holders gone for an hour are forgotten (their leases expired long ago).
        await conn.execute("DELETE FROM shard_holders WHERE expires_at < now() - interval '1 hour'")
    return Heartbeat({int(r["shard"]): int(r["generation"]) for r in rows}, int(live))


@dataclass(frozen=True, slots=True)
class Claimed:
    generations: dict[int, int]  # shard -> its new lease generation
    # Shards whose previous lease had ended before `since` (this holder's start): nobody
    # worked on them meanwhile, so CATCHUP_MAX_AGE_SECONDS bounds their catch-up like a
    # restart after downtime. A shard whose holder was alive since is caught up fully.
    orphaned: set[int]


async def claim(
    conn: asyncpg.Connection,
    holder: str,
    count: int,
    lease_seconds: float,
    since: datetime | None = None,
) -> Claimed:
    """Take up to `count` free or expired shards. SKIP LOCKED: a shard whose holder is
    storing a batch right now (its fence holds the row) is left for the next round."""
    rows = await conn.fetch(
        """
        UPDATE shard_leases AS l
        SET holder = $1, generation = l.generation + 1,
            expires_at = now() + make_interval(secs => $3), claimed_at = now()
        FROM (SELECT shard, expires_at AS was FROM shard_leases
              WHERE holder IS NULL OR expires_at < now()
              ORDER BY shard LIMIT $2 FOR UPDATE SKIP LOCKED) AS free
        WHERE l.shard = free.shard
        RETURNING l.shard, l.generation,
                  free.was < coalesce($4::timestamptz, 'infinity') AS orphaned
        """,
        holder,
        count,
        lease_seconds,
        since,
    )
    return Claimed(
        {int(r["shard"]): int(r["generation"]) for r in rows},
        {int(r["shard"]) for r in rows if r["orphaned"]},
    )


async def release(conn: asyncpg.Connection, holder: str, shards: Iterable[int]) -> list[int]:
    """Give shards up at once (free for the next claim); returns those released."""
    rows = await conn.fetch(
        """
        UPDATE shard_leases SET holder = NULL, expires_at = now()
        WHERE holder = $1 AND shard = ANY($2::int[]) RETURNING shard
        """,
        holder,
        list(shards),
    )
    return [int(r["shard"]) for r in rows]


async def leave(conn: asyncpg.Connection, holder: str) -> int:
    """Release every shard of this holder and forget it (a clean stop)."""
    async with conn.transaction():
        released = await conn.fetchval(
            """
            WITH r AS (UPDATE shard_leases SET holder = NULL, expires_at = now()
                       WHERE holder = $1 RETURNING 1)
            SELECT count(*) FROM r
            """,
            holder,
        )
        await conn.execute("DELETE FROM shard_holders WHERE holder = $1", holder)
    return int(released)


async def fence(conn: asyncpg.Connection, holder: str, leases: Mapping[int, int]) -> set[int]:
    """Inside the storing transaction: the shards of `leases` (shard -> generation) this
    holder still holds with that generation. Their rows stay locked until the transaction
    ends, so a takeover (a claim locks FOR UPDATE) waits for the commit instead of racing
    it. FOR KEY SHARE, not FOR SHARE: the holder's heartbeat (an UPDATE of the expiry
    only) must not wait for a commit, nor the next batch's fence behind the heartbeat."""
    if not leases:
        return set()
    rows = await conn.fetch(
        """
        SELECT l.shard FROM shard_leases AS l
        JOIN unnest($2::int[], $3::bigint[]) AS w(shard, generation)
          ON l.shard = w.shard AND l.generation = w.generation
        WHERE l.holder = $1
        FOR KEY SHARE OF l
        """,
        holder,
        list(leases),
        list(leases.values()),
    )
    return {int(r["shard"]) for r in rows}


async def load_cursors(conn: asyncpg.Connection, shards: Iterable[int]) -> dict[int, int]:
    """Each shard's durable cursor (0 when it has none yet)."""
    wanted = list(shards)
    rows = await conn.fetch(
        "SELECT name, last_id FROM intake_cursor WHERE name = ANY($1::text[])",
        [cursor_name(s) for s in wanted],
    )
    found = {str(r["name"]): int(r["last_id"]) for r in rows}
    return {s: found.get(cursor_name(s), 0) for s in wanted}


def advance_cursors_sql(first_param: int = 1) -> str:
    """The cursor move of `advance_cursors` (without its RETURNING), its parameters
    (`advance_cursors_args`) numbered from `first_param`: also run as a part of another
    statement of the storing transaction (a round trip fewer)."""
    holder, shards, generations, prefix, last_id, last_timestamp = (
        f"${first_param + i}" for i in range(6)
    )
    return f"""
        INSERT INTO intake_cursor AS c (name, last_id, last_timestamp, updated_at)
        SELECT {prefix} || l.shard, {last_id}, {last_timestamp}, now()
        FROM shard_leases AS l
        JOIN unnest({shards}::int[], {generations}::bigint[]) AS w(shard, generation)
          ON l.shard = w.shard AND l.generation = w.generation
        WHERE l.holder = {holder}
        {MOVE_FORWARD}"""


def advance_cursors_args(
    holder: str, leases: Mapping[int, int], last_id: int, last_timestamp: datetime | None
) -> list[Any]:
    return [holder, list(leases), list(leases.values()), CURSOR_PREFIX, last_id, last_timestamp]


_ADVANCE_CURSORS_SQL = f"{advance_cursors_sql()}RETURNING 1"


async def advance_cursors(
    conn: asyncpg.Connection,
    holder: str,
    leases: Mapping[int, int],
    last_id: int,
    last_timestamp: datetime | None,
) -> int:
    """Move the cursors of the shards this holder still holds with these generations
    to `last_id` (never back); returns how many moved. A shard lost meanwhile keeps
    its cursor: its new holder re-reads what this one may not have stored."""
    if not leases:
        return 0
    rows = await conn.fetch(
        _ADVANCE_CURSORS_SQL, *advance_cursors_args(holder, leases, last_id, last_timestamp)
    )
    return len(rows)


@dataclass(frozen=True, slots=True)
class ShardState:
    """One shard as GET /api/shards shows it."""

    shard: int
    holder: str | None
    generation: int
    expires_at: datetime | None
    cursor: int
    cursor_timestamp: datetime | None
    cursor_updated_at: datetime | None
    ids_behind: int  # newest coin_metrics id minus the cursor (all shards' rows count)


async def shard_states(conn: asyncpg.Connection) -> tuple[int, list[ShardState]]:
    """The shard count and every shard's holder (None when free or expired) and cursor."""
    count = await conn.fetchval("SELECT shard_count FROM shard_config")
    newest = await conn.fetchval("SELECT coalesce(max(id), 0) FROM coin_metrics")
    rows = await conn.fetch(
        """
        SELECT l.shard,
               CASE WHEN l.expires_at > now() THEN l.holder END AS holder,
               l.generation,
               CASE WHEN l.expires_at > now() THEN l.expires_at END AS expires_at,
               coalesce(c.last_id, 0) AS last_id, c.last_timestamp, c.updated_at
        FROM shard_leases AS l
        LEFT JOIN intake_cursor AS c ON c.name = $1 || l.shard
        ORDER BY l.shard
        """,
        CURSOR_PREFIX,
    )
    return int(count or 0), [
        ShardState(
            int(r["shard"]),
            r["holder"],
            int(r["generation"]),
            r["expires_at"],
            int(r["last_id"]),
            r["last_timestamp"],
            r["updated_at"],
            max(int(newest) - int(r["last_id"]), 0),
        )
        for r in rows
    ]
