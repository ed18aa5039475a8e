"""Server-rendered status page at `/`: what an operator checks first."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from storage.intake.role_leases import HOUSEKEEPING, role_states
from storage.intake.shard_leases import shard_states
from storage.models.overview import load_overview
from storage.version import VERSION
from web.context import AppContext, ctx
from web.routes.docs import dashboard_url
from web.routes.system import health_report

routes = web.RouteTableDef()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


async def _shards_line(context: AppContext) -> str:
    """Who holds the coin shards, and how far behind the slowest one is (docs/scale-out.md)."""
    async with context.pool.acquire() as conn:
        count, states = await shard_states(conn)
        roles = {r.role: r for r in await role_states(conn)}
    if not count:
        return "not set up yet"
    held = [s for s in states if s.holder is not None]
    holders = {s.holder for s in held}
    own = context.shards
    mine = sum(1 for s in held if own is not None and s.holder == own.holder)
    behind = max((s.ids_behind for s in states), default=0)
    housekeeping = roles.get(HOUSEKEEPING)
    lease = context.housekeeping
    if housekeeping is None or housekeeping.holder is None:
        keeping = "no process"
    elif lease is not None and housekeeping.holder == lease.holder:
        keeping = "this process"
    else:
        keeping = f"pid {housekeeping.pid} on {housekeeping.host}"
    return (
        f"{len(held)} of {count} held by {len(holders)} process(es)"
        + (f" (this one: {mine})" if own is not None else "")
        + f"; slowest cursor {behind} ids behind; evaluator and retention run by {keeping}"
        + " (GET /api/shards)"
    )


@routes.get("/")
@aiohttp_jinja2.template("status.html")
async def status_page(request: web.Request) -> dict[str, Any]:
    context = ctx(request)
    healthy, report = await health_report(request)
    lag = context.state.intake_lag_seconds
    return {
        "version": VERSION,
        "uptime": _duration(context.state.uptime_seconds),
        "healthy": healthy,
        "reasons": report["reasons"],
        "demo": context.state.demo,
        "lag": "no ticks yet" if lag is None else f"{lag:.2f} s",
        "listener": report["checks"].get("listener", "not running"),
        "overview": await load_overview(context.pool),
        "shards": await _shards_line(context),
        "dashboard_url": dashboard_url(request),
    }
