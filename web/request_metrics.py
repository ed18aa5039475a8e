"""Count every API request by route template, method and status (pp_http_requests_total).

The route template (`/api/models/{id}`), never the raw path: ids and mints in
label values would make one time series per model and coin.
"""

from __future__ import annotations

from aiohttp import web

from actors.ports import metrics
from web.errors import Handler


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def request_metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        metrics.HTTP_REQUESTS.inc(
            {"route": _route(request), "method": request.method, "status": str(status)}
        )
