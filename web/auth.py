"""Bearer-token check for the API, when `API_TOKEN` is set."""

from __future__ import annotations

import hmac

from aiohttp import web

from web.context import CONTEXT
from web.errors import ApiError, Handler

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Probes must work without credentials (container HEALTHCHECK, load balancers).
OPEN_PATHS = frozenset({"/health", "/api/health"})


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    settings = request.app[CONTEXT].settings
    token = settings.api_token
    if not token or request.path in OPEN_PATHS:
        return await handler(request)
    header = request.headers.get("Authorization", "")
    # A presented token is always checked, also where none is needed: a client (the
    # dashboard's sign-in) can learn whether its token is right with a plain read.
    if request.method in READ_METHODS and settings.api_public_reads and not header:
        return await handler(request)
    scheme, _, supplied = header.partition(" ")
    if scheme.lower() != "bearer" or not supplied:
        raise ApiError(
            401,
            "unauthorized",
            "missing bearer token (Authorization: Bearer <token>)",
            {"header": "Authorization"},
        )
    if not hmac.compare_digest(supplied.strip().encode(), token.encode()):
        raise ApiError(401, "unauthorized", "invalid bearer token", {"header": "Authorization"})
    return await handler(request)
