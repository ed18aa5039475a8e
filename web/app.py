"""The aiohttp application: REST API under /api, /metrics, /health, status page."""

from __future__ import annotations

from aiohttp import web

from web import routes_system
from web.auth import auth_middleware
from web.context import CONTEXT, AppContext
from web.errors import error_middleware


def create_app(context: AppContext) -> web.Application:
    app = web.Application(middlewares=[error_middleware, auth_middleware], client_max_size=2**20)
    app[CONTEXT] = context
    app.add_routes(routes_system.routes)
    return app
