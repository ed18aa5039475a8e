"""The aiohttp application: REST API under /api, /metrics, /health, status page."""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from web import openapi
from web.auth import (
    FAILED_AUTHENTICATIONS,
    FailedAuthentications,
    auth_middleware,
    warn_when_open_without_token,
)
from web.context import CONTEXT, AppContext
from web.errors import error_middleware
from web.json_output import json_output_middleware
from web.request_input import input_middleware
from web.request_metrics import request_metrics_middleware
from web.routes import alert_config as routes_alert_config
from web.routes import backtests as routes_backtests
from web.routes import docs as routes_docs
from web.routes import model_mode as routes_model_mode
from web.routes import models as routes_models
from web.routes import predict as routes_predict
from web.routes import predictions as routes_predictions
from web.routes import shards as routes_shards
from web.routes import statistics as routes_statistics
from web.routes import status as routes_status
from web.routes import system as routes_system
from web.routes import timeline as routes_timeline


def create_app(context: AppContext) -> web.Application:
    app = web.Application(
        # Outermost first: every answer (errors too) is counted and strict JSON; the
        # token is checked before any input is looked at.
        middlewares=[
            request_metrics_middleware,
            json_output_middleware,
            error_middleware,
            auth_middleware,
            input_middleware,
        ],
        client_max_size=2**20,
    )
    app[CONTEXT] = context
    settings = context.settings
    app[FAILED_AUTHENTICATIONS] = FailedAuthentications(
        settings.api_auth_max_failures, settings.api_auth_failure_window_seconds
    )
    app.on_startup.append(warn_when_open_without_token)
    aiohttp_jinja2.setup(
        app, loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")), autoescape=True
    )
    app.add_routes(routes_system.routes)
    app.add_routes(routes_status.routes)
    app.add_routes(openapi.routes)
    app.add_routes(routes_docs.routes)
    app.add_routes(routes_alert_config.routes)
    app.add_routes(routes_models.routes)
    app.add_routes(routes_predict.routes)
    app.add_routes(routes_predictions.routes)
    app.add_routes(routes_statistics.routes)
    app.add_routes(routes_backtests.routes)
    app.add_routes(routes_model_mode.routes)
    app.add_routes(routes_timeline.routes)
    app.add_routes(routes_shards.routes)
    return app
