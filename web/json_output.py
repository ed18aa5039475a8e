"""Every JSON answer is valid JSON: a non-finite number is written as `null`.

Python's `json.dumps` writes `Infinity` and `NaN`, which no strict JSON parser
accepts, and such values reach responses from rows we do not control (a
collector's `price_close = 'Infinity'`). Rather than guard each handler, the
middleware re-encodes any JSON response whose body contains one of those tokens.
"""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

from web.errors import Handler

__all__ = ["finite_json", "json_output_middleware"]

_NON_FINITE_TOKENS = (b"Infinity", b"NaN")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def finite_json(value: Any) -> str:
    """`value` as strict JSON, with NaN and ±Infinity written as null."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), allow_nan=False)


@web.middleware
async def json_output_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if not isinstance(response, web.Response) or response.content_type != "application/json":
        return response
    body = response.body
    # A cheap substring test first: only a body that may hold a bare token is re-encoded
    # (a string that merely contains "NaN" costs one harmless round trip).
    if isinstance(body, bytes) and any(token in body for token in _NON_FINITE_TOKENS):
        try:
            parsed = json.loads(body)
        except ValueError:
            return response
        response.text = finite_json(parsed)
    return response
