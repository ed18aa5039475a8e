"""`POST /api/predict`: predict one coin now with the running models (stored and sent)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from actors.ports import ManualPredictError, ManualResult
from web.context import ctx
from web.errors import ApiError, bad_field
from web.request_input import parse_datetime, read_json_object

routes = web.RouteTableDef()

FIELDS = {"coin_id", "model_ids", "timestamp"}


def _coin(body: dict[str, Any]) -> str:
    coin = body.get("coin_id")
    if not isinstance(coin, str) or not coin.strip():
        raise bad_field("coin_id", "is required: the coin's mint as a non-empty string")
    if len(coin) > 64:
        raise bad_field("coin_id", "must be at most 64 characters")
    return coin.strip()


def _model_ids(body: dict[str, Any]) -> list[int] | None:
    ids = body.get("model_ids")
    if ids is None:
        return None
    if not isinstance(ids, list) or not ids:
        raise bad_field("model_ids", "must be a non-empty list of active model ids")
    if any(isinstance(i, bool) or not isinstance(i, int) or i < 1 for i in ids):
        raise bad_field("model_ids", "must contain positive integers (active model ids)")
    return ids


def _timestamp(body: dict[str, Any]) -> datetime | None:
    raw = body.get("timestamp")
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise bad_field("timestamp", "must be an ISO 8601 date-time string")
    value = parse_datetime("timestamp", raw, in_body=True)
    if value is None:
        raise bad_field("timestamp", "must be an ISO 8601 date-time, e.g. 2026-01-01T12:00:00Z")
    return value


def _result(r: ManualResult) -> dict[str, Any]:
    return {
        "active_model_id": r.active_model_id,
        "model_name": r.model_name,
        "coin_id": r.coin_id,
        "timestamp": r.data_timestamp.isoformat(),
        "prediction": r.prediction,
        "probability": r.probability,
        "tag": r.tag,
        "prediction_id": r.prediction_id,
        "stored": r.stored,
        "skipped": r.skipped,
    }


@routes.post("/api/predict")
async def predict(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise bad_field(unknown[0], f"unknown field (allowed: {', '.join(sorted(FIELDS))})")
    coin, model_ids, timestamp = _coin(body), _model_ids(body), _timestamp(body)
    predictions = ctx(request).manual_predictions
    if predictions is None:
        raise ApiError("unavailable", "the prediction actors are not running")
    try:
        results = await predictions.predict(coin, model_ids, timestamp)
    except ManualPredictError as exc:
        raise ApiError(exc.code, exc.message, {"field": exc.field}) from None
    return web.json_response({"coin_id": coin, "predictions": [_result(r) for r in results]})
