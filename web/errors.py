"""One error shape for the whole API: `{"error": {"code", "message", "details"}}`.

Handlers raise `ApiError`; the middleware turns it (and aiohttp's own HTTP
errors, and anything unexpected) into that JSON with the right status.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from storage.masking import mask_mapping, mask_text

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error answer of the API. Its status follows from its stable `code` (`status_of`):
    handlers name what went wrong, this module alone decides the HTTP status."""

    def __init__(
        self,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status_of(code)
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers or {}


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """The one error shape. Message and details are masked: they may quote a URL, a DSN or
    a neighbour's answer (the Training Service echoes `token=` values in its errors)."""
    return web.json_response(
        {
            "error": {
                "code": code,
                "message": mask_text(message),
                "details": mask_mapping(details or {}),
            }
        },
        status=status,
        headers=headers,
    )


def bad_field(field: str, message: str) -> ApiError:
    """A wrong field of a request body (422); the field name is in the message and the
    details."""
    return ApiError("invalid_field", f"{field}: {message}", {"field": field})


def bad_parameter(field: str, message: str) -> ApiError:
    """A wrong query or path parameter: the same code as a body field, but 400 (the
    request itself is malformed, as the OpenAPI document says)."""
    error = bad_field(field, message)
    error.status = 400
    return error


def not_found(what: str, ident: Any) -> ApiError:
    return ApiError("not_found", f"{what} {ident} not found", {"resource": what, "id": ident})


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
    429: "too_many_requests",
    503: "unavailable",
}
# The status that answers each stable code of an error raised below the web layer
# (storage.errors.StorageError, actors.errors.ActorError): they carry no HTTP status.
_STATUS_OF_CODE = {code: status for status, code in _CODES.items()} | {
    # storage.models.model_import.ModelImportError
    "already_imported": 409,
    "model_busy": 409,
    "model_not_found": 404,
    "invalid_name": 422,
    "invalid_text": 422,
    "not_ready": 422,
    "unsupported_model_type": 422,
    "invalid_target": 422,
    "unknown_features": 422,
    "invalid_features": 422,
    "feature_mismatch": 422,
    "file_refused": 422,
    "training_service_unreachable": 502,
    "training_service_error": 502,
    # raised by the web layer itself
    "invalid_json": 400,
    "invalid_body": 400,
    "not_backtestable": 422,
    "model_file_unusable": 409,
}


def status_of(code: str) -> int:
    """The HTTP status of a stable error code from storage or actors (500 if unknown)."""
    return _STATUS_OF_CODE.get(code, 500)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
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
