"""GET /api/shards: who holds which coin shard, each shard's cursor and lag, and who
holds each role (housekeeping: the evaluator and retention, run by one process).

Read from the database, not from this process, so every replica answers the
same about all of them (docs/scale-out.md).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from storage.intake.role_leases import role_states
from storage.intake.shard_leases import shard_states
from web.context import ctx

routes = web.RouteTableDef()


@routes.get("/api/shards")
async def shards(request: web.Request) -> web.Response:
    context = ctx(request)
    async with context.pool.acquire() as conn:
        count, states = await shard_states(conn)
        holders = await conn.fetch(
            "SELECT holder, host, pid, started_at, expires_at FROM shard_holders"
            " WHERE expires_at > now() ORDER BY started_at, holder"
        )
        roles = await role_states(conn)
    own = context.shards
    me = own.holder if own is not None else None
    now = datetime.now(UTC)
    held = Counter(s.holder for s in states if s.holder is not None)
    body: dict[str, Any] = {
        "shard_count": count,
        "this_holder": me,
        "unheld": sum(1 for s in states if s.holder is None),
        "holders": [
            {
                "holder": h["holder"],
                "host": h["host"],
                "pid": h["pid"],
                "started_at": h["started_at"].isoformat(),
                "lease_expires_at": h["expires_at"].isoformat(),
                "shards_held": held.get(h["holder"], 0),
            }
            for h in holders
        ],
        "roles": [
            {
                "role": r.role,
                "holder": r.holder,
                "host": r.host,
                "pid": r.pid,
                "generation": r.generation,
                "lease_expires_at": r.expires_at.isoformat() if r.expires_at else None,
                "claimed_at": r.claimed_at.isoformat() if r.claimed_at else None,
            }
            for r in roles
        ],
        "shards": [
            {
                "shard": s.shard,
                "holder": s.holder,
                "generation": s.generation,
                "lease_expires_at": s.expires_at.isoformat() if s.expires_at else None,
                "cursor": s.cursor,
                "cursor_timestamp": s.cursor_timestamp.isoformat() if s.cursor_timestamp else None,
                "lag_seconds": round((now - s.cursor_timestamp).total_seconds(), 3)
                if s.cursor_timestamp
                else None,
                "ids_behind": s.ids_behind,
            }
            for s in states
        ],
    }
    return web.json_response(body)
