"""`GET /api/predictions/timeline`: predictions, alerts, outcomes and delay per time bin.

Read-only and aggregated in SQL (storage/predictions/timeline.py): the dashboard's
overview draws its charts from it without reading a day of predictions.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web

from storage.predictions.timeline import bin_for, timeline
from web.context import ctx
from web.routes.predictions import check_known, int_param

routes = web.RouteTableDef()

MAX_HOURS = 24 * 7


@routes.get("/api/predictions/timeline")
async def prediction_timeline(request: web.Request) -> web.Response:
    check_known(request.query, ("hours",))
    hours = int_param(request.query, "hours", low=1, high=MAX_HOURS, default=24)
    assert hours is not None
    span = timedelta(hours=hours)
    size = bin_for(span)
    # Bins line up with the clock (whole minutes, quarters, hours) and the last one
    # holds the current moment.
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    now = datetime.now(UTC)
    end = epoch + ((now - epoch) // size + 1) * size
    start = end - span
    async with ctx(request).pool.acquire() as conn:
        bins = await timeline(conn, start, end, size)
    return web.json_response(
        {
            "from": start.isoformat(),
            "to": end.isoformat(),
            "bin_seconds": int(size.total_seconds()),
            "bins": [b.as_dict() for b in bins],
        }
    )
