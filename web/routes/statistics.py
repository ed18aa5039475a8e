"""Alert statistics and per-model live quality next to the training metrics.

The numbers are counted in SQL (storage/predictions/statistics.py, which also states the
definitions); this module only validates the filters and shapes the JSON.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from storage.predictions.statistics import ModelStatistics, statistics
from web.context import ctx
from web.errors import not_found
from web.routes.outcome_thresholds import thresholds_from_outcomes
from web.routes.predictions import (
    MAX_ID,
    check_known,
    check_range,
    int_param,
    path_model,
    time_param,
)

routes = web.RouteTableDef()

# Live metric -> keys the imported training metrics may use for the same thing.
COMPARED = {
    "accuracy": ("training_accuracy", "accuracy"),
    "precision": ("training_precision", "precision"),
    "recall": ("training_recall", "recall"),
    "f1": ("training_f1", "f1"),
}


def _training_value(metrics: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if metrics.get(key) is not None:
            return metrics[key]
    return None


def _model_block(m: ModelStatistics) -> dict[str, Any]:
    live = m.live.as_dict()
    live_quality = live["live"]
    training = m.model.training_metrics
    return {
        "active_model_id": m.model.active_model_id,
        "model_id": m.model.model_id,
        "name": m.model.name,
        "model_type": m.model.model_type,
        "is_active": m.model.is_active,
        "target": m.model.target,
        **live,
        "training_metrics": training,
        "comparison": {
            name: {"training": _training_value(training, keys), "live": live_quality[name]}
            for name, keys in COMPARED.items()
        },
    }


def _filters(request: web.Request, *, model_param: bool) -> dict[str, Any]:
    query = request.query
    check_known(
        query,
        ("active_model_id", "date_from", "date_to")
        if model_param
        else ("date_from", "date_to", "target_precision"),
    )
    date_from = time_param(query, "date_from")
    date_to = time_param(query, "date_to")
    check_range(date_from, date_to, "date_from", "date_to")
    filters: dict[str, Any] = {"date_from": date_from, "date_to": date_to}
    if model_param:
        filters["active_model_id"] = int_param(query, "active_model_id", low=1, high=MAX_ID)
    return filters


def _echo(filters: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in filters.items()}


@routes.get("/api/alerts/statistics")
async def alert_statistics(request: web.Request) -> web.Response:
    filters = _filters(request, model_param=True)
    async with ctx(request).pool.acquire() as conn:
        report = await statistics(conn, **filters)
    return web.json_response(
        {
            "filters": _echo(filters),
            **report.totals.as_dict(),
            "models": [_model_block(m) for m in report.models],
        }
    )


@routes.get(r"/api/models/{id:\d+}/statistics")
async def model_statistics(request: web.Request) -> web.Response:
    model = path_model(request)
    filters = _filters(request, model_param=False)
    async with ctx(request).pool.acquire() as conn:
        report = await statistics(conn, active_model_id=model, include_models=[model], **filters)
        if not report.models:
            raise not_found("model", model)
        thresholds = await thresholds_from_outcomes(conn, model, request.query, filters)
    return web.json_response(
        {"filters": _echo(filters), **_model_block(report.models[0]), "thresholds": thresholds}
    )
