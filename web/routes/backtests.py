"""Backtests over the API: queue one, watch its progress, read its summary and ticks.

The request only writes a row; the work runs in a worker process started by
`actors.backtest.runner`, never in this event loop. DELETE removes the row,
which also stops a running worker.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from storage.backtests import rows as backtest_rows
from storage.backtests import store as backtests
from storage.backtests.store import BacktestRow
from storage.models import active_models, model_import
from web.context import ctx
from web.errors import ApiError, bad_field, bad_parameter, not_found
from web.request_input import parse_datetime, read_json_object
from web.routes.models import _api_error, _training_service
from web.routes.predictions import choice_param, int_param

routes = web.RouteTableDef()

FIELDS = ("model_id", "from", "to")
TAGS = ("negative", "positive", "alert")
OUTCOMES = ("success", "failed", "not_applicable", "pending")
MAX_ID = 2**63 - 1


def _time(body: dict[str, Any], field: str) -> datetime | None:
    raw = body.get(field)
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise bad_field(field, "must be an ISO 8601 date-time string")
    value = parse_datetime(field, raw, in_body=True)
    if value is None:
        raise bad_field(field, "must be an ISO 8601 date-time, e.g. 2026-01-01T12:00:00Z")
    return value


def _model_id(body: dict[str, Any]) -> int:
    value = body.get("model_id")
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise bad_field("model_id", "is required: a Training Service model id (positive integer)")
    return value


def _backtest_id(request: web.Request) -> int:
    raw = request.match_info["backtest_id"]
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_ID:
        raise bad_parameter("backtest_id", "must be a positive integer")
    return int(raw)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def backtest_json(row: BacktestRow) -> dict[str, Any]:
    total = row.ticks_total
    return {
        "id": row.id,
        "model_id": row.model_id,
        "from": _iso(row.range_from),
        "to": _iso(row.range_to),
        "status": row.status,
        "progress": {
            "ticks_done": row.ticks_done,
            "ticks_total": total,
            "fraction": min(row.ticks_done / total, 1.0) if total else None,
        },
        "summary": row.summary,
        "error": row.error,
        "created_at": _iso(row.created_at),
        "started_at": _iso(row.started_at),
        "finished_at": _iso(row.finished_at),
    }


async def _check_model(request: web.Request, model_id: int) -> None:
    """Refuse at once what the worker would refuse: an unknown model, one the import's
    metadata checks refuse, a Training Service that is down (an imported model needs
    none of it: its file is reused)."""
    async with ctx(request).pool.acquire() as conn:
        if await active_models.get_model_by_model_id(conn, model_id) is not None:
            return
    async with _training_service(request) as client:
        try:
            info = await model_import.fetch_model_info(client, model_id)
        except model_import.ModelImportError as exc:
            raise _api_error(exc) from None
    problems = model_import.preflight_problems(info)
    if problems:
        raise ApiError("not_backtestable", "; ".join(problems), {"field": "model_id"})


@routes.post("/api/backtests")
async def create_backtest(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise bad_field(unknown[0], f"unknown field (allowed: {', '.join(FIELDS)})")
    model_id = _model_id(body)
    start, end = _time(body, "from"), _time(body, "to")
    if start is not None and end is not None and start > end:
        raise bad_field("from", "must not be after to")
    context = ctx(request)
    await _check_model(request, model_id)
    async with context.pool.acquire() as conn:
        row = await backtests.create(conn, model_id, start, end)
    poke = context.backtests_poke
    if poke is not None:
        poke()
    return web.json_response(
        backtest_json(row), status=202, headers={"Location": f"/api/backtests/{row.id}"}
    )


@routes.get("/api/backtests")
async def list_backtests(request: web.Request) -> web.Response:
    limit = int_param(request.query, "limit", low=1, high=200, default=50)
    assert limit is not None
    async with ctx(request).pool.acquire() as conn:
        rows = await backtests.list_recent(conn, limit)
    return web.json_response({"items": [backtest_json(r) for r in rows]})


@routes.get("/api/backtests/{backtest_id}")
async def get_backtest(request: web.Request) -> web.Response:
    backtest_id = _backtest_id(request)
    async with ctx(request).pool.acquire() as conn:
        row = await backtests.get(conn, backtest_id)
    if row is None:
        raise not_found("backtest", backtest_id)
    return web.json_response(backtest_json(row))


@routes.get("/api/backtests/{backtest_id}/ticks")
async def backtest_ticks(request: web.Request) -> web.Response:
    backtest_id = _backtest_id(request)
    query = request.query
    limit = int_param(query, "limit", low=1, high=1000, default=100)
    offset = int_param(query, "offset", low=0, high=2**31 - 1, default=0)
    tag = choice_param(query, "tag", TAGS)
    outcome = choice_param(query, "outcome", OUTCOMES)
    assert limit is not None and offset is not None
    async with ctx(request).pool.acquire() as conn:
        if await backtests.get(conn, backtest_id) is None:
            raise not_found("backtest", backtest_id)
        total, rows = await backtests.ticks_page(
            conn, backtest_id, limit=limit, offset=offset, tag=tag, outcome=outcome
        )
    items = [{**r, "timestamp": r["timestamp"].isoformat()} for r in rows]
    return web.json_response({"items": items, "total": total, "limit": limit, "offset": offset})


@routes.get("/api/backtests/{backtest_id}/coins/{coin_id}")
async def backtest_coin(request: web.Request) -> web.Response:
    """A coin's closes around one of the backtest's ticks (the dashboard's alert chart)."""
    backtest_id = _backtest_id(request)
    coin = request.match_info["coin_id"]
    if len(coin) > 64:
        raise bad_parameter("coin_id", "must be at most 64 characters")
    at = parse_datetime("at", request.query.get("at", ""))
    if at is None:
        raise bad_parameter("at", "is required: the tick's ISO 8601 time")
    minutes = int_param(request.query, "minutes", low=1, high=1440, default=30)
    assert minutes is not None
    try:
        window = (at - timedelta(minutes=minutes), at + timedelta(minutes=minutes))
    except OverflowError:
        raise bad_parameter("at", "is too close to the representable range") from None
    async with ctx(request).pool.acquire() as conn:
        if await backtests.get(conn, backtest_id) is None:
            raise not_found("backtest", backtest_id)
        points = await backtest_rows.coin_prices(conn, coin, *window, 5000)
    return web.json_response(
        {
            "coin_id": coin,
            "at": at.isoformat(),
            "points": [{"timestamp": t.isoformat(), "price_close": p} for t, p in points],
        }
    )


@routes.delete("/api/backtests/{backtest_id}")
async def delete_backtest(request: web.Request) -> web.Response:
    backtest_id = _backtest_id(request)
    async with ctx(request).pool.acquire() as conn:
        if not await backtests.delete(conn, backtest_id):
            raise not_found("backtest", backtest_id)
    return web.json_response({"id": backtest_id, "deleted": True})
