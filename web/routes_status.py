"""Server-rendered status page at `/`: what an operator checks first."""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from storage.overview import load_overview
from web.context import VERSION, ctx
from web.routes_docs import dashboard_url
from web.routes_system import health_report

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
        "dashboard_url": dashboard_url(request),
    }
