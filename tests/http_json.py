"""One JSON request to the API: (status, decoded answer), the way every test reads it."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient


async def call_json(
    http: aiohttp.ClientSession | TestClient[Any, Any],
    method: str,
    url: str,
    body: Any = None,
    **options: Any,
) -> tuple[int, Any]:
    """Send `body` (encoded as JSON unless already text) and decode the JSON answer;
    `options` go to the request (params=, headers=…)."""
    if body is not None:
        options["data"] = body if isinstance(body, str) else json.dumps(body)
        options["headers"] = {"Content-Type": "application/json", **options.get("headers", {})}
    async with http.request(method, url, **options) as response:
        return response.status, await response.json()
