"""Per-model alert settings, webhook status, and the dead and waiting webhook jobs.

PATCH bodies change only the fields they name (the service being replaced reset
the others). Each field is validated on its own and a wrong one is a 422 that
names it; unknown fields are refused rather than ignored, because a typo that
silently does nothing is how an alert gets lost.

Losses are loud: a model whose jobs died or wait on a missing endpoint within
`LOSS_WINDOW_SECONDS` is `degraded` in n8n-status with the reason, and
/api/webhooks/losses sums them up for the dashboard and /health.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import anyio
import asyncpg
from aiohttp import web

from actors.ports import TargetPolicy, policy_from, shown_error
from storage.config import redact_url
from storage.models.model_settings import (
    ALERT_COLUMNS,
    CAP_COLUMNS,
    IGNORE_COLUMNS,
    PAYLOAD_FORMS,
    SEND_MODES,
    ModelSettings,
    get_settings,
    update_settings,
)
from storage.outbox import endpoints as webhook_endpoints
from storage.outbox import jobs as outbox
from storage.outbox.attempts import AttemptRow, Losses, losses, losses_by_model, model_status
from storage.outbox.jobs import REQUEUEABLE, JobStatus, OutboxRow
from web.context import ctx
from web.errors import ApiError, bad_field, not_found
from web.request_input import read_json_object
from web.routes.predictions import int_param

routes = web.RouteTableDef()

MAX_URL_LENGTH = 2048
MAX_MINT_LENGTH = 64  # coin_metrics.mint is varchar(64)
MAX_WHITELIST = 10_000
MAX_CAP = 2**31 - 1  # integer column
MAX_ID = 2**63 - 1  # bigint ids
DEAD_PREVIEW = 20
LOSS_WINDOW_SECONDS = 3600  # dead jobs make a model degraded this long

# The original service's names for the caps, still sent by users' scripts.
CAP_ALIASES = {
    "max_log_entries_per_coin_negative": "max_open_negative",
    "max_log_entries_per_coin_positive": "max_open_positive",
    "max_log_entries_per_coin_alert": "max_open_alert",
}


# ---- field validators: each returns the value to store or raises a 422 naming the field


def _number(field: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_field(field, "must be a number")
    if not math.isfinite(value) or not low <= value <= high:
        raise bad_field(field, f"must be between {low} and {high}")
    return float(value)


def _integer(field: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_field(field, "must be an integer")
    if not low <= value <= high:
        raise bad_field(field, f"must be between {low} and {high}")
    return value


def _boolean(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise bad_field(field, "must be true or false")
    return value


def _webhook_url(field: str, value: Any) -> str | None:
    """http(s) URL with a host, or null (empty string also clears: use the global URL)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise bad_field(field, "must be an http(s) URL or null")
    url = value.strip()
    if len(url) > MAX_URL_LENGTH or any(ch.isspace() for ch in url):
        raise bad_field(field, f"must be an http(s) URL of at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        raise bad_field(field, "is not a valid URL") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname or not port_ok:
        raise bad_field(field, "must be an http or https URL with a host")
    return url


def _send_modes(field: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise bad_field(field, f"must be a non-empty list of: {', '.join(SEND_MODES)}")
    modes: list[str] = []
    for mode in value:
        if not isinstance(mode, str) or mode not in SEND_MODES:
            raise bad_field(field, f"unknown send mode {mode!r}; known: {', '.join(SEND_MODES)}")
        if mode not in modes:
            modes.append(mode)
    return modes


def _payload_form(field: str, value: Any) -> str | None:
    """'full', 'compact', or null: follow the global N8N_PAYLOAD."""
    if value is None:
        return None
    if value not in PAYLOAD_FORMS:
        raise bad_field(field, "must be 'full', 'compact' or null (the global N8N_PAYLOAD)")
    return str(value)


def _filter_mode(field: str, value: Any) -> str:
    if value not in ("all", "whitelist"):
        raise bad_field(field, "must be 'all' or 'whitelist'")
    return str(value)


def _whitelist(field: str, value: Any) -> list[str]:
    if not isinstance(value, list):
        raise bad_field(field, "must be a list of coin mints")
    if len(value) > MAX_WHITELIST:
        raise bad_field(field, f"must hold at most {MAX_WHITELIST} mints")
    mints: list[str] = []
    for mint in value:
        if not isinstance(mint, str) or not mint.strip() or len(mint.strip()) > MAX_MINT_LENGTH:
            raise bad_field(field, f"every mint must be a string of 1-{MAX_MINT_LENGTH} characters")
        if mint.strip() not in mints:
            mints.append(mint.strip())
    return mints


Validator = Callable[[str, Any], Any]

ALERT_FIELDS: dict[str, Validator] = {
    "alert_threshold": lambda f, v: _number(f, v, 0.5, 1.0),
    "n8n_webhook_url": _webhook_url,
    "n8n_enabled": _boolean,
    "n8n_send_modes": _send_modes,
    "n8n_payload": _payload_form,
    "coin_filter_mode": _filter_mode,
    "coin_whitelist": _whitelist,
}
IGNORE_FIELDS: dict[str, Validator] = {
    name: (lambda f, v: _integer(f, v, 0, 86400)) for name in IGNORE_COLUMNS
}
CAP_FIELDS: dict[str, Validator] = {
    name: (lambda f, v: _integer(f, v, 0, MAX_CAP)) for name in CAP_COLUMNS
}
assert set(ALERT_FIELDS) == set(ALERT_COLUMNS)


def validate_changes(
    body: Mapping[str, Any],
    fields: Mapping[str, Validator],
    aliases: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The columns to set, validated; 422 naming unknown, duplicate or wrong fields."""
    aliases = aliases or {}
    unknown = sorted(k for k in body if k not in fields and k not in aliases)
    if unknown:
        error = bad_field(
            unknown[0],
            f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"known: {', '.join(sorted([*fields, *aliases]))}",
        )
        error.details["fields"] = unknown
        raise error
    if not body:
        raise bad_field("body", f"name at least one of: {', '.join(sorted(fields))}")
    changes: dict[str, Any] = {}
    named_as: dict[str, str] = {}
    for key, value in body.items():
        column = aliases.get(key, key)
        if column in named_as:
            raise bad_field(key, f"given twice (also as {named_as[column]})")
        named_as[column] = key
        changes[column] = fields[column](key, value)
    return changes


def _check_whitelist(settings: ModelSettings) -> None:
    if settings.coin_filter_mode == "whitelist" and not settings.coin_whitelist:
        raise bad_field("coin_whitelist", "must name at least one mint in whitelist mode")


# ---- responses


def _effective_url(request: web.Request, settings: ModelSettings) -> tuple[str | None, str | None]:
    if settings.n8n_webhook_url:
        return settings.n8n_webhook_url, "model"
    default = ctx(request).settings.n8n_webhook_url
    return (default, "global") if default else (None, None)


def _alert_config(request: web.Request, s: ModelSettings) -> dict[str, Any]:
    url, source = _effective_url(request, s)
    return {
        "active_model_id": s.active_model_id,
        "model_id": s.model_id,
        "name": s.name,
        "alert_threshold": s.alert_threshold,
        "n8n_webhook_url": redact_url(s.n8n_webhook_url) if s.n8n_webhook_url else None,
        "n8n_enabled": s.n8n_enabled,
        "n8n_send_modes": list(s.n8n_send_modes),
        "n8n_payload": s.n8n_payload,
        "effective_n8n_payload": s.n8n_payload or ctx(request).settings.n8n_payload,
        "coin_filter_mode": s.coin_filter_mode,
        "coin_whitelist": list(s.coin_whitelist),
        "effective_webhook_url": redact_url(url) if url else None,
        "webhook_url_source": source,
        "updated_at": s.updated_at.isoformat(),
    }


def _ignore_settings(s: ModelSettings) -> dict[str, Any]:
    return {
        "active_model_id": s.active_model_id,
        "ignore_negative_seconds": s.ignore_negative_seconds,
        "ignore_positive_seconds": s.ignore_positive_seconds,
        "ignore_alert_seconds": s.ignore_alert_seconds,
        "updated_at": s.updated_at.isoformat(),
    }


def _caps(s: ModelSettings) -> dict[str, Any]:
    body: dict[str, Any] = {
        "active_model_id": s.active_model_id,
        "max_open_negative": s.max_open_negative,
        "max_open_positive": s.max_open_positive,
        "max_open_alert": s.max_open_alert,
    }
    body.update({alias: body[column] for alias, column in CAP_ALIASES.items()})
    body["updated_at"] = s.updated_at.isoformat()
    return body


def _attempt(a: AttemptRow | None) -> dict[str, Any] | None:
    if a is None:
        return None
    return {
        "job_id": a.outbox_id,
        "attempt": a.attempt,
        "attempted_at": a.attempted_at.isoformat(),
        "target_url": redact_url(a.target_url),
        "status_code": a.status_code,
        "latency_ms": a.latency_ms,
        "error": shown_error(a.status_code, a.error),
        "outcome": a.outcome,
        "active_model_ids": list(a.active_model_ids),
        "model_ids": list(a.model_ids),
    }


def _job(j: OutboxRow) -> dict[str, Any]:
    return {
        "id": j.id,
        "status": j.status,
        "target_url": redact_url(j.target_url),
        "coin_id": j.coin_id,
        "data_timestamp": j.data_timestamp.isoformat(),
        "active_model_ids": list(j.active_model_ids),
        "model_ids": list(j.model_ids),
        "attempts": j.attempts,
        "last_error": shown_error(j.last_status_code, j.last_error),
        "last_status_code": j.last_status_code,
        "created_at": j.created_at.isoformat(),
        "first_attempt_at": j.first_attempt_at.isoformat() if j.first_attempt_at else None,
        "last_attempt_at": j.last_attempt_at.isoformat() if j.last_attempt_at else None,
        "idempotency_key": j.idempotency_key,
        "payload": j.payload,
    }


def _model_id(request: web.Request) -> int:
    value = int(request.match_info["id"])
    if value > MAX_ID:  # beyond BIGINT no row exists, and asyncpg refuses to send it (was a 500)
        raise not_found("model", value)
    return value


async def _load(request: web.Request) -> ModelSettings:
    async with ctx(request).pool.acquire() as conn:
        settings = await get_settings(conn, _model_id(request))
    if settings is None:
        raise not_found("model", _model_id(request))
    return settings


async def _patch(
    request: web.Request,
    fields: Mapping[str, Validator],
    aliases: Mapping[str, str] | None = None,
    check: Callable[[ModelSettings], None] | None = None,
    vet: Callable[[web.Request, dict[str, Any]], Awaitable[None]] | None = None,
) -> ModelSettings:
    body = await read_json_object(request)
    changes = validate_changes(body, fields, aliases)
    if vet is not None:
        await vet(request, changes)
    async with ctx(request).pool.acquire() as conn:
        updated = await update_settings(conn, _model_id(request), changes, check=check)
    if updated is None:
        raise not_found("model", _model_id(request))
    return updated


# ---- routes


@routes.get(r"/api/models/{id:\d+}/alert-config")
async def get_alert_config(request: web.Request) -> web.Response:
    return web.json_response(_alert_config(request, await _load(request)))


def target_policy(request: web.Request) -> TargetPolicy:
    """Where webhooks may go, as the running service's dispatcher sees it."""
    context = ctx(request)
    settings = context.settings
    return policy_from(
        settings.webhook_allowed_networks,
        api_host=settings.api_host,
        api_port=settings.api_port,
        demo=context.state.demo,
    )


async def _vet_webhook_url(request: web.Request, changes: dict[str, Any]) -> None:
    """A URL to a refused target (SSRF) is a 422 naming the field and the setting that
    would allow it; delivery checks again after resolving (DNS rebinding)."""
    url = changes.get("n8n_webhook_url")
    if url:
        refusal = await target_policy(request).check_url(url)
        if refusal is not None:
            raise bad_field("n8n_webhook_url", refusal)


@routes.patch(r"/api/models/{id:\d+}/alert-config")
async def patch_alert_config(request: web.Request) -> web.Response:
    before = await _load(request)
    updated = await _patch(request, ALERT_FIELDS, check=_check_whitelist, vet=_vet_webhook_url)
    old_url, _ = _effective_url(request, before)
    new_url, _ = _effective_url(request, updated)
    if old_url and new_url != old_url:
        # Jobs parked on the old URL (endpoint missing) follow the model to its new one.
        context = ctx(request)
        async with context.pool.acquire() as conn:
            moved = await outbox.retarget_waiting(conn, context.settings.n8n_webhook_url or None)
        if moved:
            _poke(request)
    return web.json_response(_alert_config(request, updated))


@routes.get(r"/api/models/{id:\d+}/ignore-settings")
async def get_ignore_settings(request: web.Request) -> web.Response:
    return web.json_response(_ignore_settings(await _load(request)))


@routes.patch(r"/api/models/{id:\d+}/ignore-settings")
async def patch_ignore_settings(request: web.Request) -> web.Response:
    return web.json_response(_ignore_settings(await _patch(request, IGNORE_FIELDS)))


@routes.get(r"/api/models/{id:\d+}/max-log-entries")
async def get_max_log_entries(request: web.Request) -> web.Response:
    return web.json_response(_caps(await _load(request)))


@routes.patch(r"/api/models/{id:\d+}/max-log-entries")
async def patch_max_log_entries(request: web.Request) -> web.Response:
    return web.json_response(_caps(await _patch(request, CAP_FIELDS, CAP_ALIASES)))


def _summary(
    settings: ModelSettings, url: str | None, last: AttemptRow | None, lost: Losses
) -> str:
    if not settings.n8n_enabled:
        return "disabled"
    if url is None:
        return "no_url"
    if lost.dead_recently or lost.waiting:
        return "degraded"
    if last is None:
        return "no_attempts"
    return {"delivered": "ok", "retry": "retrying"}.get(last.outcome, "failing")


def loss_reasons(lost: Losses) -> list[str]:
    """Fixed sentences for n8n-status and /health (never a receiver's words)."""
    reasons = []
    if lost.dead_recently:
        reasons.append(
            f"{lost.dead_recently} webhook job(s) died in the last hour"
            " (see /api/webhooks/dead; POST /api/webhooks/retry-all sends them again)"
        )
    if lost.waiting:
        reasons.append(
            f"{lost.waiting} webhook job(s) wait for a missing endpoint (404 beyond the grace;"
            " see /api/webhooks/waiting)"
        )
    return reasons


def _endpoint(state: webhook_endpoints.EndpointState | None) -> dict[str, Any] | None:
    if state is None:
        return None
    return {
        "target_url": redact_url(state.target_url),
        "status": "missing" if state.missing_since else "failing",
        "failing_since": state.failing_since.isoformat(),
        "missing_since": state.missing_since.isoformat() if state.missing_since else None,
        "last_status_code": state.last_status_code,
    }


@routes.get(r"/api/models/{id:\d+}/n8n-status")
async def n8n_status(request: web.Request) -> web.Response:
    """Webhook health of one model, from the attempts that carried its predictions."""
    settings = await _load(request)
    async with (
        ctx(request).pool.acquire() as conn,
        # One snapshot: otherwise a delivery settling between the queries shows a dead
        # job without the attempt that killed it.
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        status = await model_status(conn, settings.active_model_id)
        counts = await outbox.model_outbox_counts(conn, settings.active_model_id)
        _, dead = await outbox.list_dead(
            conn, limit=DEAD_PREVIEW, offset=0, active_model_id=settings.active_model_id
        )
        _, waiting = await outbox.list_jobs(
            conn,
            status="waiting",
            limit=DEAD_PREVIEW,
            offset=0,
            active_model_id=settings.active_model_id,
        )
        lost = await losses(
            conn, window_seconds=LOSS_WINDOW_SECONDS, active_model_id=settings.active_model_id
        )
        url, source = _effective_url(request, settings)
        endpoint = (await webhook_endpoints.load(conn, [url])).get(url) if url else None
    return web.json_response(
        {
            "active_model_id": settings.active_model_id,
            "model_id": settings.model_id,
            "status": _summary(settings, url, status.last_attempt, lost),
            "reasons": loss_reasons(lost),
            "endpoint": _endpoint(endpoint),
            "n8n_enabled": settings.n8n_enabled,
            "n8n_send_modes": list(settings.n8n_send_modes),
            "effective_webhook_url": redact_url(url) if url else None,
            "webhook_url_source": source,
            "last_attempt": _attempt(status.last_attempt),
            "last_success": _attempt(status.last_success),
            "last_error": _attempt(status.last_error),
            # Attempts and jobs older than the webhook retention are deleted: the counts
            # and the last attempts cover this many seconds (None: every job is kept).
            "history_seconds": ctx(request).settings.webhook_retention_seconds or None,
            "attempts_by_outcome": status.counts,
            "jobs": {
                "pending": counts.pending,
                "delivered": counts.delivered,
                "dead": counts.dead,
                "waiting": counts.waiting,
            },
            "losses_last_hour": {"dead": lost.dead_recently, "waiting": lost.waiting},
            "dead_jobs": [_job(j) for j in dead],
            "waiting_jobs": [_job(j) for j in waiting],
        }
    )


async def _job_list(request: web.Request, status: JobStatus) -> web.Response:
    # Like every list route: an empty value is absent, a bad one is a 400 naming it.
    limit = int_param(request.query, "limit", low=1, high=1000, default=50)
    offset = int_param(request.query, "offset", low=0, high=2**62, default=0)
    model = int_param(request.query, "active_model_id", low=1, high=MAX_ID, default=None)
    assert limit is not None and offset is not None
    async with ctx(request).pool.acquire() as conn:
        total, jobs = await outbox.list_jobs(
            conn, status=status, limit=limit, offset=offset, active_model_id=model
        )
    return web.json_response(
        {"total": total, "limit": limit, "offset": offset, "jobs": [_job(j) for j in jobs]}
    )


@routes.get("/api/webhooks/dead")
async def dead_webhooks(request: web.Request) -> web.Response:
    return await _job_list(request, "dead")


@routes.get("/api/webhooks/waiting")
async def waiting_webhooks(request: web.Request) -> web.Response:
    return await _job_list(request, "waiting")


@routes.get("/api/webhooks/losses")
async def webhook_losses(request: web.Request) -> web.Response:
    """Dead and waiting jobs in one answer (dashboard overview, /health)."""
    async with ctx(request).pool.acquire() as conn:
        total = await losses(conn, window_seconds=LOSS_WINDOW_SECONDS)
        by_model = await losses_by_model(conn, window_seconds=LOSS_WINDOW_SECONDS)
        dead_total = await outbox.count_status(conn, "dead")
        missing = await webhook_endpoints.missing(conn)
    return web.json_response(
        {
            "status": "degraded" if total.dead_recently or total.waiting else "ok",
            "reasons": loss_reasons(total),
            "window_seconds": LOSS_WINDOW_SECONDS,
            "dead_last_hour": total.dead_recently,
            "dead_total": int(dead_total),
            "waiting": total.waiting,
            "missing_endpoints": [_endpoint(e) for e in missing],
            "models": [
                {
                    "active_model_id": m,
                    "dead_last_hour": lost.dead_recently,
                    "waiting": lost.waiting,
                }
                for m, lost in by_model.items()
            ],
        }
    )


async def webhook_health(pool: asyncpg.Pool) -> tuple[dict[str, Any], list[str]]:
    """/health's webhook check and its reasons (jobs dead in the last hour, waiting)."""
    try:
        with anyio.fail_after(2.0):
            async with pool.acquire() as conn:
                lost = await losses(conn, window_seconds=LOSS_WINDOW_SECONDS)
    except Exception as exc:  # the database check of /health reports the cause
        return {"error": type(exc).__name__}, []
    check = {"dead_last_hour": lost.dead_recently, "waiting": lost.waiting}
    return check, [f"webhooks: {reason}" for reason in loss_reasons(lost)]


def _poke(request: web.Request) -> None:
    poke = ctx(request).webhooks_poke
    if poke is not None:
        poke()


@routes.post("/api/webhooks/retry-all")
async def retry_all_webhooks(request: web.Request) -> web.Response:
    """Send every dead and/or waiting job again (optionally one model's), fresh budget."""
    body = await read_json_object(request)
    unknown = sorted(set(body) - {"statuses", "active_model_id"})
    if unknown:
        raise bad_field(unknown[0], "unknown field; known: active_model_id, statuses")
    # Named explicitly, so that an empty or mistyped body never requeues everything.
    statuses = body.get("statuses")
    if (
        not isinstance(statuses, list)
        or not statuses
        or any(s not in REQUEUEABLE for s in statuses)
    ):
        raise bad_field("statuses", "must be a non-empty list of: dead, waiting")
    model = body.get("active_model_id")
    if model is not None:
        model = _integer("active_model_id", model, 1, MAX_ID)
    async with ctx(request).pool.acquire() as conn:
        requeued = await outbox.requeue_all(conn, statuses, active_model_id=model)
    if requeued:
        _poke(request)
    return web.json_response({"requeued": requeued, "statuses": statuses, "active_model_id": model})


@routes.post(r"/api/webhooks/{job_id:\d+}/retry")
async def retry_dead_webhook(request: web.Request) -> web.Response:
    """Send a dead or waiting job again, with a fresh retry budget."""
    job_id = int(request.match_info["job_id"])
    if job_id > MAX_ID:  # beyond BIGINT no row exists, and asyncpg refuses to send it (was a 500)
        raise not_found("webhook job", job_id)
    context = ctx(request)
    async with context.pool.acquire() as conn:
        result = await outbox.requeue_dead(conn, job_id)
    if result == "not_found":
        raise not_found("webhook job", job_id)
    if result == "not_dead":
        raise ApiError(
            "conflict", f"webhook job {job_id} is neither dead nor waiting", {"id": job_id}
        )
    _poke(request)
    return web.json_response({"id": job_id, "status": "pending"})
