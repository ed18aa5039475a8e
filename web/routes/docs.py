"""Where to start reading the API: `/api` (links), `/api/docs` (interactive page).

The interactive page is Swagger UI from the `swagger-ui-bundle-v2` package,
served by this service: no CDN, so it works on a machine without internet and
sends nothing about the operator anywhere. It reads `/api/openapi.json`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web
from swagger_ui_bundle import swagger_ui_path

from storage.version import VERSION
from web.context import ctx

routes = web.RouteTableDef()

SWAGGER_UI = Path(str(swagger_ui_path))
# The only files the page needs; fixed routes, so no path from a request reaches the disk.
ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "application/javascript",
    "swagger-ui-standalone-preset.js": "application/javascript",
}

DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>pump-predictor API</title>
  <link rel="stylesheet" href="/api/docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/api/docs/swagger-ui-bundle.js"></script>
  <script src="/api/docs/swagger-ui-standalone-preset.js"></script>
  <script src="/api/docs/init.js"></script>
</body>
</html>
"""

# A file of ours rather than an inline script: works under a strict Content-Security-Policy.
INIT_SCRIPT = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/api/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout",
  });
};
"""


@routes.get("/api/docs")
async def docs_page(_request: web.Request) -> web.Response:
    return web.Response(text=DOCS_PAGE, content_type="text/html")


@routes.get("/api/docs/init.js")
async def docs_init(_request: web.Request) -> web.Response:
    return web.Response(text=INIT_SCRIPT, content_type="application/javascript")


def _asset_handler(name: str, content_type: str) -> Any:
    async def asset(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(SWAGGER_UI / name, headers={"Content-Type": content_type})

    return asset


for _name, _type in ASSETS.items():
    routes.get(f"/api/docs/{_name}")(_asset_handler(_name, _type))


@routes.get("/api")
async def api_index(request: web.Request) -> web.Response:
    """The banner's `/api` link: what there is to read, as links."""
    return web.json_response(
        {
            "service": "pump-predictor",
            "version": VERSION,
            "links": {
                "docs": "/api/docs",
                "openapi": "/api/openapi.json",
                "health": "/health",
                "metrics": "/metrics",
                "status_page": "/",
                "models": "/api/models",
                "available_models": "/api/models/available",
                "predictions": "/api/predictions",
                "config": "/api/config",
                "dashboard": dashboard_url(request),
            },
        }
    )


def dashboard_url(request: web.Request) -> str | None:
    """The dashboard as the client reaching us would reach it (None: not running here)."""
    actors = ctx(request).actors
    if actors is None or "dashboard" not in actors.actor_names:
        return None
    host = request.url.host or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{ctx(request).settings.streamlit_port}/"
