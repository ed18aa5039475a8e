"""Model management: what the Training Service offers, import, and the imported models' lifecycle.

Paths are those users' scripts already call (CONTRACTS.md section 5). Every
`{id}` is typed `\\d+`, so `/api/models/active` and `/api/models/available`
can never be taken for a model id (the service being replaced had that bug).
Refusals from the import workflow keep their stable `code` and reach the
client as 4xx/5xx JSON with the reason; a Training Service that cannot be
reached is a 502 whose message names the URL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Final

import structlog
from aiohttp import web

from storage.clients.training_service import ModelInfo, TrainingServiceClient, TrainingServiceError
from storage.models import active_models, model_import
from storage.models.active_models import ActiveModelRow
from storage.models.model_import import (
    ModelImportError,
    client_from_settings,
    training_service_failure,
)
from storage.predictions import statistics
from storage.text_rules import MAX_NAME_LENGTH
from web.context import ctx
from web.errors import ApiError, bad_field, not_found
from web.request_input import read_json_object

log = structlog.get_logger(__name__)

routes = web.RouteTableDef()

UNUSABLE_FILE_STATES: Final = frozenset({"missing", "error"})
MAX_ID: Final = 2**63 - 1


@asynccontextmanager
async def _training_service(request: web.Request) -> AsyncIterator[TrainingServiceClient]:
    context = ctx(request)
    shared = context.training_service
    if shared is not None:
        yield shared
        return
    async with client_from_settings(context.settings) as client:
        yield client


def _api_error(exc: ModelImportError) -> ApiError:
    return ApiError(exc.code, exc.message, exc.details)


# ---- request values


def _id(request: web.Request, name: str = "id") -> int:
    value = int(request.match_info[name])
    if value > MAX_ID:  # beyond BIGINT no row exists, and asyncpg refuses to send it (was a 500)
        raise not_found("model", value)
    return value


def _include_inactive(request: web.Request, default: bool) -> bool:
    raw = request.query.get("include_inactive")
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in {"true", "1", "yes"}:
        return True
    if value in {"false", "0", "no"}:
        return False
    raise bad_field("include_inactive", "must be true or false")


def _only_fields(body: dict[str, Any], known: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(known))
    if unknown:
        error = bad_field(
            unknown[0], f"unknown field(s) {', '.join(unknown)}; known: {', '.join(known)}"
        )
        error.details["fields"] = unknown
        raise error


# ---- responses


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _target(
    kind: str,
    variable: str | None,
    operator: str | None,
    value: float | None,
    future_minutes: int | None,
    change: float | None,
    direction: str | None,
) -> dict[str, Any]:
    return {
        "target_kind": kind,
        "target_variable": variable,
        "target_operator": operator,
        "target_value": value,
        "future_minutes": future_minutes,
        "price_change_percent": change,
        "target_direction": direction,
    }


def model_json(row: ActiveModelRow, live: dict[str, Any] | None = None) -> dict[str, Any]:
    """An imported model as the API shows it (no webhook URL: it may carry credentials).

    `live` is its prediction summary (count, last prediction, outcomes) where shown.
    """
    body = {
        "id": row.id,
        "active_model_id": row.id,
        "model_id": row.model_id,
        "name": row.display_name,
        "original_name": row.name,
        "custom_name": row.custom_name,
        "model_type": row.model_type,
        "description": row.description,
        **_target(
            row.target_kind,
            row.target_variable,
            row.target_operator,
            row.target_value,
            row.future_minutes,
            row.price_change_percent,
            row.target_direction,
        ),
        "features": list(row.features),
        "features_count": len(row.features),
        "phases": list(row.phases) if row.phases is not None else None,
        "params": row.params,
        "training_metrics": row.training_metrics,
        "is_active": row.is_active,
        "mode": row.mode,
        "alert_threshold": row.alert_threshold,
        "n8n_enabled": row.n8n_enabled,
        "n8n_send_modes": list(row.n8n_send_modes),
        "coin_filter_mode": row.coin_filter_mode,
        "file": {
            "path": row.file_path,
            "sha256": row.file_sha256,
            "state": row.file_state,
            "error": row.file_error,
        },
        "imported_at": _iso(row.imported_at),
        "updated_at": _iso(row.updated_at),
        "activated_at": _iso(row.activated_at),
        "deactivated_at": _iso(row.deactivated_at),
    }
    if live is not None:
        body["live"] = live
    return body


async def _with_live(request: web.Request, rows: list[ActiveModelRow]) -> list[dict[str, Any]]:
    async with ctx(request).pool.acquire() as conn:
        summaries = await statistics.model_summaries(conn, [r.id for r in rows])
    return [model_json(r, summaries[r.id].as_dict()) for r in rows]


def available_json(info: ModelInfo) -> dict[str, Any]:
    """A Training Service model, with the reasons an import would be refused (if any)."""
    problems = model_import.preflight_problems(info)
    return {
        "id": info.id,
        "model_id": info.id,
        "name": info.name,
        "model_type": info.model_type,
        "status": info.status,
        "description": info.description,
        **_target(
            info.target_kind,
            info.target_variable,
            info.target_operator,
            info.target_value,
            info.future_minutes,
            info.price_change_percent,
            info.target_direction,
        ),
        "features": list(info.features),
        "features_count": len(info.features),
        "phases": list(info.phases) if info.phases is not None else None,
        "params": info.params,
        "use_engineered_features": info.use_engineered_features,
        "feature_engineering_windows": list(info.feature_engineering_windows),
        "training_metrics": model_import.training_metrics_of(info),
        "created_at": _iso(info.created_at),
        "updated_at": _iso(info.updated_at),
        "importable": not problems,
        "problems": problems,
    }


async def apply_to_pipeline(request: web.Request) -> None:
    """Answer a model change only once the predictors match it: a row committed
    after the answer is predicted by a model just activated or imported."""
    model_sync = ctx(request).model_sync
    if model_sync is None:
        return
    try:
        await model_sync.sync()
    except Exception as exc:  # committed anyway; the model-sync actor catches up
        log.warning("model_sync_from_api_failed", error=str(exc))


async def _get_row(request: web.Request) -> ActiveModelRow:
    async with ctx(request).pool.acquire() as conn:
        row = await active_models.get_model(conn, _id(request))
    if row is None:
        raise not_found("model", _id(request))
    return row


# ---- Training Service side


@routes.get("/api/models/available")
async def list_available(request: web.Request) -> web.Response:
    """READY models of the Training Service that are not imported yet."""
    async with _training_service(request) as client:
        try:
            offered = await client.list_models()
        except TrainingServiceError as exc:
            raise _api_error(training_service_failure(exc)) from exc
    async with ctx(request).pool.acquire() as conn:
        imported = await active_models.imported_model_ids(conn)
    models = [available_json(info) for info in offered if info.id not in imported]
    return web.json_response({"models": models, "total": len(models)})


@routes.get(r"/api/models/available/{model_id:\d+}")
async def get_available(request: web.Request) -> web.Response:
    model_id = _id(request, "model_id")
    async with _training_service(request) as client:
        try:
            info = await model_import.fetch_model_info(client, model_id)
        except ModelImportError as exc:
            raise _api_error(exc) from exc
    async with ctx(request).pool.acquire() as conn:
        row = await active_models.get_model_by_model_id(conn, model_id)
    body = available_json(info)
    body["imported"] = row is not None
    body["active_model_id"] = row.id if row is not None else None
    return web.json_response(body)


@routes.post("/api/models/import")
async def import_model(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    _only_fields(body, ("model_id",))
    model_id = body.get("model_id")
    if model_id is None:
        raise bad_field("model_id", "is required")
    if isinstance(model_id, bool) or not isinstance(model_id, int) or not 1 <= model_id <= MAX_ID:
        raise bad_field("model_id", "must be a positive integer")
    context = ctx(request)
    async with _training_service(request) as client:
        try:
            active_id = await model_import.import_model(
                context.pool, context.settings, client, model_id
            )
        except ModelImportError as exc:
            raise _api_error(exc) from exc
    await apply_to_pipeline(request)
    async with context.pool.acquire() as conn:
        row = await active_models.get_model(conn, active_id)
    if row is None:  # deleted between the import and this read
        raise not_found("model", active_id)
    return web.json_response(model_json(row), status=201)


# ---- imported models


async def _list(request: web.Request, default_include_inactive: bool) -> web.Response:
    include_inactive = _include_inactive(request, default_include_inactive)
    async with ctx(request).pool.acquire() as conn:
        rows = await active_models.list_models(conn, include_inactive)
    return web.json_response({"models": await _with_live(request, rows), "total": len(rows)})


@routes.get("/api/models")
async def list_models(request: web.Request) -> web.Response:
    """Every imported model; `include_inactive=false` for the active ones only."""
    return await _list(request, default_include_inactive=True)


@routes.get("/api/models/active")
async def list_active_models(request: web.Request) -> web.Response:
    """Active models; `include_inactive=true` adds the inactive ones."""
    return await _list(request, default_include_inactive=False)


@routes.get(r"/api/models/{id:\d+}")
async def get_model(request: web.Request) -> web.Response:
    [body] = await _with_live(request, [await _get_row(request)])
    return web.json_response(body)


async def _set_active(request: web.Request, active: bool) -> web.Response:
    row = await _get_row(request)
    if active and row.file_state in UNUSABLE_FILE_STATES:
        raise ApiError(
            "model_file_unusable",
            f"model {row.id} cannot be activated: its file is {row.file_state} "
            f"({row.file_error or 'no details'}); reload it first",
            {"id": row.id, "file_state": row.file_state},
        )
    async with ctx(request).pool.acquire() as conn:
        result = await active_models.set_active(conn, row.id, active)
    if result is None:
        raise not_found("model", row.id)
    updated, changed = result
    if changed:
        await apply_to_pipeline(request)
    return web.json_response({**model_json(updated), "changed": changed})


@routes.post(r"/api/models/{id:\d+}/activate")
async def activate(request: web.Request) -> web.Response:
    return await _set_active(request, True)


@routes.post(r"/api/models/{id:\d+}/deactivate")
async def deactivate(request: web.Request) -> web.Response:
    return await _set_active(request, False)


@routes.patch(r"/api/models/{id:\d+}/rename")
async def rename(request: web.Request) -> web.Response:
    """Set the custom name; null (or an empty name) restores the Training Service's name."""
    body = await read_json_object(request)
    _only_fields(body, ("name",))
    if "name" not in body:
        raise bad_field("name", "is required (null restores the original name)")
    name = body["name"]
    if name is not None and not isinstance(name, str):
        raise bad_field("name", "must be a string or null")
    name = name.strip() if isinstance(name, str) else None
    if name is not None and len(name) > MAX_NAME_LENGTH:
        raise bad_field("name", f"must be at most {MAX_NAME_LENGTH} characters")
    async with ctx(request).pool.acquire() as conn:
        row = await active_models.rename(conn, _id(request), name or None)
    if row is None:
        raise not_found("model", _id(request))
    return web.json_response(model_json(row))


@routes.post(r"/api/models/{id:\d+}/reload")
async def reload(request: web.Request) -> web.Response:
    """Re-verify the file (re-download it when missing or altered), load it, hot-swap it."""
    context = ctx(request)
    async with _training_service(request) as client:
        try:
            result = await model_import.reload_model(
                context.pool, context.settings, client, _id(request)
            )
        except ModelImportError as exc:
            raise _api_error(exc) from exc
    await apply_to_pipeline(request)
    return web.json_response(
        {
            **model_json(result.model),
            "reload": {
                "redownloaded": result.redownloaded,
                "reason": result.reason,
                "repairs": list(result.repairs),
            },
        }
    )


@routes.post(r"/api/models/{id:\d+}/update-metrics")
async def update_metrics(request: web.Request) -> web.Response:
    context = ctx(request)
    async with _training_service(request) as client:
        try:
            row = await model_import.update_metrics(context.pool, client, _id(request))
        except ModelImportError as exc:
            raise _api_error(exc) from exc
    return web.json_response(model_json(row))


@routes.delete(r"/api/models/{id:\d+}")
async def delete(request: web.Request) -> web.Response:
    """Delete the model, its predictions, scan state and file."""
    try:
        row = await model_import.delete_imported_model(ctx(request).pool, _id(request))
    except ModelImportError as exc:
        raise _api_error(exc) from exc
    await apply_to_pipeline(request)
    return web.json_response({"deleted": True, "id": row.id, "model_id": row.model_id})
