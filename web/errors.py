"""One error shape for the whole API: `{"error": {"code", "message", "details"}}`.

Handlers raise `ApiError`; the middleware turns it (and aiohttp's own HTTP
errors, and anything unexpected) into that JSON with the right status.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message, "details": details or {}}}, status=status
    )


def bad_field(field: str, message: str, status: int = 422) -> ApiError:
    """A request value that is wrong; the field name is in the message and the details."""
    return ApiError(status, "invalid_field", f"{field}: {message}", {"field": field})


def not_found(what: str, ident: Any) -> ApiError:
    return ApiError(404, "not_found", f"{what} {ident} not found", {"resource": what, "id": ident})


_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_field",
    503: "unavailable",
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _CODES.get(exc.status, "http_error")
        message = (
            exc.reason if exc.text is None or exc.text.startswith(str(exc.status)) else exc.text
        )
        details: dict[str, Any] = {"path": request.path}
        if exc.status == 405:
            details["method"] = request.method
        return error_response(exc.status, code, message or exc.reason, details)
    except Exception:
        log.exception("unhandled_api_error", path=request.path, method=request.method)
        return error_response(
            500, "internal_error", "internal server error", {"path": request.path}
        )


async def read_json_object(request: web.Request, *, allow_empty: bool = False) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says what is wrong with it."""
    if not request.can_read_body:
        if allow_empty:
            return {}
        raise ApiError(400, "invalid_body", "request body must be a JSON object", {"field": "body"})
    try:
        body = await request.json()
    except ValueError as exc:
        raise ApiError(
            400, "invalid_json", f"request body is not valid JSON: {exc}", {"field": "body"}
        ) from None
    if body is None and allow_empty:
        return {}
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "request body must be a JSON object", {"field": "body"})
    return body
