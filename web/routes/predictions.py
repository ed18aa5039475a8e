"""Reading stored predictions: filtered list with a real total, latest per coin, one
model's predictions for a coin with the price history around them; deleting a
model's predictions.

Every prediction carries `model_mode`, its model's mode now (`live`, `shadow`;
null once the model is deleted), joined here by id rather than in the reads'
SQL, so a shadow model's predictions are marked wherever they are listed.

A query parameter that is malformed or unknown is a 400 that names it: a typo
in a filter that silently returned everything is how a user trusts wrong numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import asyncpg
from aiohttp import web
from multidict import MultiMapping

from storage.models.model_mode import modes_of
from storage.predictions.reads import (
    RESULTS,
    TAGS,
    CoinDetails,
    PredictionFilters,
    coin_details,
    delete_model_predictions,
    latest_for_coin,
    list_predictions,
    model_exists,
)
from web.context import ctx
from web.errors import bad_parameter, not_found
from web.request_input import parse_datetime

routes = web.RouteTableDef()

MAX_ID = 2**63 - 1
MAX_MINT_LENGTH = 64


# ---- query parameters (shared with routes_statistics) ------------------------------


def check_known(query: MultiMapping[str], known: Iterable[str]) -> None:
    """Refuse unknown and repeated parameters (a repeated one would be half ignored)."""
    allowed = set(known)
    for name in query:
        if name not in allowed:
            known_text = ", ".join(sorted(allowed)) or "none"
            raise bad_parameter(name, f"unknown parameter; known: {known_text}")
        if len(query.getall(name)) > 1:
            raise bad_parameter(name, "given more than once")


def int_param(
    query: Mapping[str, str], name: str, *, low: int, high: int, default: int | None = None
) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_parameter(name, "must be an integer") from None
    if not low <= value <= high:
        raise bad_parameter(name, f"must be between {low} and {high}")
    return value


def float_param(query: Mapping[str, str], name: str, *, low: float, high: float) -> float | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise bad_parameter(name, "must be a number") from None
    if not low <= value <= high:  # also refuses nan
        raise bad_parameter(name, f"must be between {low} and {high}")
    return value


def time_param(query: Mapping[str, str], name: str) -> datetime | None:
    """ISO 8601; a time without an offset is UTC. A '+' sent unencoded arrives as a
    space ("...00 00:00"), which is repaired rather than refused."""
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    text = raw.strip()
    candidates = [text]
    head, sep, tail = text.rpartition(" ")
    if sep and tail[:2].isdigit() and ":" in tail and ("T" in head or " " in head):
        candidates.append(f"{head}+{tail}")
    for candidate in candidates:
        value = parse_datetime(name, candidate)
        if value is not None:
            return value
    raise bad_parameter(name, "must be an ISO 8601 date-time, e.g. 2026-01-01T12:00:00Z")


def choice_param(query: Mapping[str, str], name: str, choices: Iterable[str]) -> str | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    options = tuple(choices)
    if raw not in options:
        raise bad_parameter(name, f"must be one of: {', '.join(options)}")
    return raw


def text_param(query: Mapping[str, str], name: str, *, max_length: int) -> str | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > max_length:
        raise bad_parameter(name, f"must be at most {max_length} characters")
    return raw


def check_range(low: Any, high: Any, low_name: str, high_name: str) -> None:
    if low is not None and high is not None and low > high:
        raise bad_parameter(high_name, f"must not be before/below {low_name}")


def path_coin(request: web.Request) -> str:
    coin = request.match_info["coin_id"]
    if not coin or len(coin) > MAX_MINT_LENGTH:
        raise bad_parameter("coin_id", f"must be 1-{MAX_MINT_LENGTH} characters")
    return coin


def path_model(request: web.Request) -> int:
    value = int(request.match_info["id"])
    if not 1 <= value <= MAX_ID:
        raise not_found("model", value)
    return value


# ---- routes ------------------------------------------------------------------------

LIST_PARAMS = (
    "coin_id",
    "active_model_id",
    "model_id",
    "tag",
    "evaluation_result",
    "probability_min",
    "probability_max",
    "date_from",
    "date_to",
    "data_from",
    "data_to",
    "predicted_from",
    "predicted_to",
    "limit",
    "offset",
)


def _filters(query: Mapping[str, str]) -> PredictionFilters:
    # data_from/data_to: the names of the first API document, still accepted.
    for alias, name in (("data_from", "date_from"), ("data_to", "date_to")):
        if alias in query and name in query:
            raise bad_parameter(alias, f"give either {name} or {alias}, not both")
    date_from = time_param(query, "date_from") or time_param(query, "data_from")
    date_to = time_param(query, "date_to") or time_param(query, "data_to")
    filters = PredictionFilters(
        coin_id=text_param(query, "coin_id", max_length=MAX_MINT_LENGTH),
        active_model_id=int_param(query, "active_model_id", low=1, high=MAX_ID),
        model_id=int_param(query, "model_id", low=1, high=MAX_ID),
        tag=choice_param(query, "tag", TAGS),
        evaluation_result=choice_param(query, "evaluation_result", RESULTS),
        probability_min=float_param(query, "probability_min", low=0.0, high=1.0),
        probability_max=float_param(query, "probability_max", low=0.0, high=1.0),
        date_from=date_from,
        date_to=date_to,
        predicted_from=time_param(query, "predicted_from"),
        predicted_to=time_param(query, "predicted_to"),
    )
    check_range(
        filters.probability_min, filters.probability_max, "probability_min", "probability_max"
    )
    check_range(filters.date_from, filters.date_to, "date_from", "date_to")
    check_range(filters.predicted_from, filters.predicted_to, "predicted_from", "predicted_to")
    return filters


class _Row(Protocol):
    @property
    def active_model_id(self) -> int: ...

    def as_dict(self) -> dict[str, Any]: ...


async def _with_modes(conn: asyncpg.Connection, rows: Sequence[_Row]) -> list[dict[str, Any]]:
    """The rows as dicts, each with its model's mode (see the module docstring)."""
    modes = await modes_of(conn, (r.active_model_id for r in rows))
    return [{**r.as_dict(), "model_mode": modes.get(r.active_model_id)} for r in rows]


@routes.get("/api/predictions")
async def get_predictions(request: web.Request) -> web.Response:
    query = request.query
    check_known(query, LIST_PARAMS)
    filters = _filters(query)
    limit = int_param(query, "limit", low=1, high=1000, default=100)
    offset = int_param(query, "offset", low=0, high=MAX_ID, default=0)
    assert limit is not None and offset is not None
    async with ctx(request).pool.acquire() as conn:
        total, rows = await list_predictions(conn, filters, limit=limit, offset=offset)
        items = await _with_modes(conn, rows)
    return web.json_response({"items": items, "total": total, "limit": limit, "offset": offset})


@routes.get("/api/predictions/latest/{coin_id}")
async def get_latest_predictions(request: web.Request) -> web.Response:
    coin = path_coin(request)
    check_known(request.query, ())
    async with ctx(request).pool.acquire() as conn:
        rows = await latest_for_coin(conn, coin)
        items = await _with_modes(conn, rows)
    if not rows:
        raise not_found("predictions for coin", coin)
    return web.json_response({"coin_id": coin, "predictions": items})


def _details(active_model_id: int, coin: str, d: CoinDetails, mode: str | None) -> dict[str, Any]:
    ref = d.reference_price
    last = d.predictions[-1]
    return {
        "active_model_id": active_model_id,
        "model_id": last.model_id,
        "model_name": last.model_name,
        "model_mode": mode,
        "coin_id": coin,
        "reference": {
            "timestamp": d.reference_timestamp.isoformat() if d.reference_timestamp else None,
            "price_close": ref,
            "prediction_id": d.predictions[0].id,
        },
        "window": {"start": d.window_start.isoformat(), "end": d.window_end.isoformat()},
        "predictions": [{**p.as_dict(), "model_mode": mode} for p in d.predictions],
        "predictions_total": d.predictions_total,
        "price_history": [
            {
                "timestamp": p.timestamp.isoformat(),
                "price_close": p.price_close,
                "change_pct": p.change_pct,
                "high_pct": p.high_pct,
                "low_pct": p.low_pct,
                "market_cap_close": p.market_cap_close,
                "volume_sol": p.volume_sol,
            }
            for p in d.prices
        ],
        "price_history_truncated": d.prices_truncated,
    }


@routes.get(r"/api/models/{id:\d+}/coins/{coin_id}/details")
async def get_coin_details(request: web.Request) -> web.Response:
    """A model's predictions for a coin with the price history around them, in % of the
    price at the first of those predictions."""
    model = path_model(request)
    coin = path_coin(request)
    query = request.query
    check_known(query, ("limit", "points"))
    limit = int_param(query, "limit", low=1, high=1000, default=100)
    points = int_param(query, "points", low=1, high=10_000, default=2000)
    assert limit is not None and points is not None
    async with ctx(request).pool.acquire() as conn:
        if not await model_exists(conn, model):
            raise not_found("model", model)
        details = await coin_details(conn, model, coin, limit=limit, points=points)
        mode = (await modes_of(conn, (model,))).get(model)
    if details is None:
        raise not_found(f"predictions of model {model} for coin", coin)
    return web.json_response(_details(model, coin, details, mode))


@routes.delete(r"/api/models/{id:\d+}/predictions")
async def delete_predictions(request: web.Request) -> web.Response:
    model = path_model(request)
    async with ctx(request).pool.acquire() as conn, conn.transaction():
        if not await model_exists(conn, model):
            raise not_found("model", model)
        deleted = await delete_model_predictions(conn, model)
    return web.json_response({"active_model_id": model, "deleted": deleted})
