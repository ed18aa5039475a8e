"""Roles one process at a time runs among all replicas and workers (migration 0026).

A role ('housekeeping': the evaluator and retention) is a lease row like a
shard's (`storage.intake.shard_leases`): a holder, an expiry extended by every
heartbeat, and a generation every claim increments. A row rather than a
session-level advisory lock for the shards' reasons: it is visible to
`GET /api/shards`, works through transaction-pooling proxies, and needs no
connection held for the lease's life (an advisory lock would pin one pooled
connection per process, and losing that connection would silently end the
role). The price is the expiry: a killed holder's role is taken over once its
lease expires, SHARD_LEASE_SECONDS after its last heartbeat; a clean stop
releases it at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

HOUSEKEEPING = "housekeeping"


async def hold(
    conn: asyncpg.Connection, role: str, holder: str, host: str, pid: int, lease_seconds: float
) -> int | None:
    """Extend this holder's lease of `role`, or claim it when it is free or expired.
    Returns the lease's generation (a new one for a claim), None while another holds it."""
    generation: int | None = await conn.fetchval(
        """
        INSERT INTO role_leases AS r (role, holder, host, pid, generation, expires_at, claimed_at)
        VALUES ($1, $2, $3, $4, 1, now() + make_interval(secs => $5), now())
        ON CONFLICT (role) DO UPDATE
        SET holder = excluded.holder, host = excluded.host, pid = excluded.pid,
            generation = CASE WHEN r.holder = excluded.holder AND r.expires_at > now()
                              THEN r.generation ELSE r.generation + 1 END,
            claimed_at = CASE WHEN r.holder = excluded.holder AND r.expires_at > now()
                              THEN r.claimed_at ELSE now() END,
            expires_at = excluded.expires_at
        WHERE r.holder = excluded.holder OR r.holder IS NULL OR r.expires_at <= now()
        RETURNING generation
        """,
        role,
        holder,
        host,
        pid,
        lease_seconds,
    )
    return generation


async def release(conn: asyncpg.Connection, role: str, holder: str) -> bool:
    """Give the role up at once (the next heartbeat of another process claims it)."""
    released = await conn.fetchval(
        """
        UPDATE role_leases SET holder = NULL, host = NULL, pid = NULL, expires_at = now()
        WHERE role = $1 AND holder = $2 RETURNING true
        """,
        role,
        holder,
    )
    return bool(released)


@dataclass(frozen=True, slots=True)
class RoleState:
    """One role as GET /api/shards shows it."""

    role: str
    holder: str | None  # None: free or expired
    host: str | None
    pid: int | None
    generation: int
    expires_at: datetime | None
    claimed_at: datetime | None


async def role_states(conn: asyncpg.Connection) -> list[RoleState]:
    """Every role and its live holder."""
    rows = await conn.fetch(
        """
        SELECT role, generation, claimed_at,
               CASE WHEN expires_at > now() THEN holder END AS holder,
               CASE WHEN expires_at > now() THEN host END AS host,
               CASE WHEN expires_at > now() THEN pid END AS pid,
               CASE WHEN expires_at > now() THEN expires_at END AS expires_at
        FROM role_leases ORDER BY role
        """
    )
    return [
        RoleState(
            r["role"],
            r["holder"],
            r["host"],
            r["pid"],
            int(r["generation"]),
            r["expires_at"],
            r["claimed_at"],
        )
        for r in rows
    ]
