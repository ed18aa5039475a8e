"""Shadow mode over the API: set a model's mode, promote a shadow model, compare models.

A shadow model is predicted, stored and evaluated like any model and never
sent to webhooks. `PATCH /api/models/{id}/mode {"mode": "shadow"}` switches it,
`POST /api/models/{id}/promote` makes it live in one action, and
`GET /api/models/compare?ids=1,2` sets models side by side on the ticks they
both predicted (each one's precision and recall at its own threshold there, and
how often they agree).
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import structlog
from aiohttp import web

from features.outcome_curves import compare
from storage.models import active_models, model_mode
from storage.predictions.outcome_samples import tick_outcomes
from web.context import ctx
from web.errors import bad_field, bad_parameter, not_found
from web.request_input import read_json_object
from web.routes.models import apply_to_pipeline
from web.routes.predictions import check_known, check_range, path_model, time_param

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()

COMPARED_MAX = 5
COMPARE_SAMPLE = 20_000  # newest predictions per model


async def _set(request: web.Request, model: int, mode: str) -> web.Response:
    async with ctx(request).pool.acquire() as conn:
        previous = await model_mode.set_mode(conn, model, mode)
    if previous is None:
        raise not_found("model", model)
    await apply_to_pipeline(request)
    return web.json_response({"id": model, "mode": mode, "previous_mode": previous})


@routes.patch(r"/api/models/{id:\d+}/mode")
async def set_model_mode(request: web.Request) -> web.Response:
    model = path_model(request)
    body = await read_json_object(request)
    unknown = sorted(set(body) - {"mode"})
    if unknown:
        raise bad_field(unknown[0], "unknown field (allowed: mode)")
    mode = body.get("mode")
    if mode not in model_mode.MODES:
        raise bad_field("mode", f"must be one of {', '.join(model_mode.MODES)}")
    return await _set(request, model, str(mode))


@routes.post(r"/api/models/{id:\d+}/promote")
async def promote_model(request: web.Request) -> web.Response:
    """Shadow to live in one action (a live model stays live)."""
    return await _set(request, path_model(request), "live")


def _ids(raw: str | None) -> list[int]:
    parts = [p.strip() for p in (raw or "").split(",") if p.strip()]
    if not all(p.isdigit() and 1 <= int(p) <= 2**63 - 1 for p in parts):
        raise bad_parameter("ids", "must be active model ids separated by commas")
    ids = list(dict.fromkeys(int(p) for p in parts))
    if not 2 <= len(ids) <= COMPARED_MAX:
        raise bad_parameter("ids", f"must name 2 to {COMPARED_MAX} different models")
    return ids


@routes.get("/api/models/compare")
async def compare_models(request: web.Request) -> web.Response:
    query = request.query
    check_known(query, ("ids", "date_from", "date_to"))
    ids = _ids(query.get("ids"))
    date_from, date_to = time_param(query, "date_from"), time_param(query, "date_to")
    check_range(date_from, date_to, "date_from", "date_to")
    models: dict[int, dict[str, Any]] = {}
    outcomes = {}
    async with ctx(request).pool.acquire() as conn:
        for model in ids:
            row = await active_models.get_model(conn, model)
            if row is None:
                raise not_found("model", model)
            models[model] = {
                "id": model,
                "name": row.display_name,
                "mode": row.mode,
                "alert_threshold": row.alert_threshold,
            }
            outcomes[model] = await tick_outcomes(
                conn, model, date_from=date_from, date_to=date_to, limit=COMPARE_SAMPLE
            )
    pairs = [{"a": a, "b": b, **compare(outcomes[a], outcomes[b])} for a, b in combinations(ids, 2)]
    return web.json_response(
        {
            "models": [models[i] for i in ids],
            "sample": f"the newest {COMPARE_SAMPLE} predictions of each model at most",
            "pairs": pairs,
        }
    )
