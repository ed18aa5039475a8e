"""Every value a request carries is checked here once, before a handler sees it.

Handlers validate meaning (a threshold between 0.5 and 1); this module refuses
what no handler should ever have to think about, naming the field: text that
PostgreSQL cannot store (NUL, unpaired surrogates) in path and query
parameters and anywhere in a JSON body, JSON nested deeper than any request
of ours needs, non-finite numbers, and date-times that fall outside the
representable range once converted to UTC (`0001-01-01T00:00:00+14:00`).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from storage.text_rules import text_problem
from web.errors import ApiError, Handler, bad_field, bad_parameter

__all__ = [
    "MAX_JSON_DEPTH",
    "check_text",
    "input_middleware",
    "parse_datetime",
    "parse_json_body",
]

# Our deepest body is an object holding a list of strings; 32 leaves room for clients
# that wrap things, and keeps a hostile body from exhausting the parser's stack.
MAX_JSON_DEPTH = 32


def _shown(name: str) -> str:
    """A field name safe to put in a message (it may be the offending text itself)."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def check_text(field: str, value: str, *, in_body: bool = False) -> str:
    """`value` unchanged, or a 4xx naming `field` when it cannot be stored as text (a body
    field's 422, a query or path parameter's 400: `web.errors`)."""
    problem = text_problem(value)
    if problem is not None:
        raise _refused(_shown(field), problem, in_body)
    return value


def _refused(field: str, message: str, in_body: bool) -> ApiError:
    return bad_field(field, message) if in_body else bad_parameter(field, message)


def parse_datetime(field: str, raw: str, *, in_body: bool = False) -> datetime | None:
    """An aware datetime (naive means UTC), None when `raw` is not ISO 8601, and a 4xx
    naming `field` when it is a date-time no database or client can represent in UTC."""
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise _refused(
            field, "is outside the representable range (years 1 to 9999 in UTC)", in_body
        ) from None
    return value


@web.middleware
async def input_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse unstorable text in path and query parameters before any handler runs."""
    for name, value in request.match_info.items():
        check_text(name, value)
    for name, value in request.query.items():
        check_text(name, name)
        check_text(name, value)
    return await handler(request)


def _field(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]" if path else f"[{key}]"
    return f"{path}.{key}" if path else key


def _check_tree(body: Any) -> None:
    """Walk the parsed body without recursion: depth, text and numbers, naming the field."""
    stack: list[tuple[str, Any, int]] = [("", body, 1)]
    while stack:
        path, value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ApiError(
                    "invalid_json",
                    f"{path or 'body'}: JSON nested deeper than {MAX_JSON_DEPTH} levels",
                    {"field": path or "body", "max_depth": MAX_JSON_DEPTH},
                )
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                field = _field(path, key)
                if isinstance(key, str):
                    check_text(field, key, in_body=True)
                stack.append((field, item, depth + 1))
        elif isinstance(value, str):
            check_text(path or "body", value, in_body=True)
        elif isinstance(value, float) and not math.isfinite(value):
            raise bad_field(_shown(path or "body"), "must be a finite number")


async def parse_json_body(request: web.Request) -> Any:
    """The body parsed as JSON and checked as above; a 400 that says what is wrong."""
    try:
        text = await request.text()
    except UnicodeDecodeError:
        raise ApiError(
            "invalid_json", "request body is not valid UTF-8", {"field": "body"}
        ) from None
    try:
        body = json.loads(text)
    except RecursionError:
        raise ApiError(
            "invalid_json",
            f"body: JSON nested deeper than {MAX_JSON_DEPTH} levels",
            {"field": "body", "max_depth": MAX_JSON_DEPTH},
        ) from None
    except ValueError as exc:
        raise ApiError(
            "invalid_json", f"request body is not valid JSON: {exc}", {"field": "body"}
        ) from None
    _check_tree(body)
    return body


async def read_json_object(request: web.Request, *, allow_empty: bool = False) -> dict[str, Any]:
    """The request body as a JSON object, or a 4xx that says what is wrong with it.

    Parsing and the checks every body gets are `parse_json_body`'s.
    """
    if not request.can_read_body:
        if allow_empty:
            return {}
        raise ApiError("invalid_body", "request body must be a JSON object", {"field": "body"})
    body = await parse_json_body(request)
    if body is None and allow_empty:
        return {}
    if not isinstance(body, dict):
        raise ApiError("invalid_body", "request body must be a JSON object", {"field": "body"})
    return body
