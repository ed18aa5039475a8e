"""The OpenAPI 3.1 document of every route, served at `/api/openapi.json`.

Written by hand next to the routes (one table, below) rather than inferred, so
that a test can hold the two against each other: every registered route must be
documented here and every documented route must exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

from storage.models import model_settings
from storage.text_rules import MAX_NAME_LENGTH
from storage.version import VERSION

JSON = "application/json"

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": "object"},
            },
        }
    },
}

# Ids are BIGINT columns: a larger number can name no row (it answers 404).
ID = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
THRESHOLD = {"type": "number", "minimum": 0.5, "maximum": 1.0}
SECONDS = {"type": "integer", "minimum": 0, "maximum": 86400}
CAP = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
SEND_MODES = {
    "type": "array",
    "minItems": 1,
    "items": {"enum": list(model_settings.SEND_MODES)},
}
ISO_TIME = {"type": "string", "format": "date-time"}


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    where: str  # "path" | "query"
    schema: dict[str, Any]
    description: str = ""
    required: bool = False
    # The handler reads `?name=` (empty) as "not given", as HTML forms send it.
    allow_empty: bool = False


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    summary: str
    tag: str
    params: tuple[Param, ...] = ()
    body: dict[str, Any] | None = None
    body_required: bool = True
    mutating: bool = False
    responses: dict[int, str] = field(default_factory=dict)
    content_type: str = JSON
    # Bodies that are not the error shape (e.g. the health report answered with 503).
    schemas: dict[int, dict[str, Any]] = field(default_factory=dict)
    description: str = ""  # longer than the summary: what a client should do with it


def _id(name: str = "id", what: str = "active model id") -> Param:
    return Param(name, "path", ID, what, required=True)


def _q(name: str, schema: dict[str, Any], description: str = "") -> Param:
    return Param(name, "query", schema, description)


def _empty_ok(params: tuple[Param, ...]) -> tuple[Param, ...]:
    """Query parameters whose handler treats an empty value as absent."""
    return tuple(replace(p, allow_empty=True) if p.where == "query" else p for p in params)


def _obj(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = list(required)
    return schema


PAGE = (
    _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size"),
    _q("offset", {"type": "integer", "minimum": 0}, "rows to skip"),
)
MODEL = "models"
PRED = "predictions"
STATS = "statistics"
ALERTS = "alerts"
SYS = "system"
HOOKS = "webhooks"
BACKTESTS = "backtests"

ALERT_CONFIG_BODY = _obj(
    {
        "alert_threshold": THRESHOLD,
        "n8n_webhook_url": {"type": ["string", "null"], "format": "uri"},
        "n8n_enabled": {"type": "boolean"},
        "n8n_send_modes": SEND_MODES,
        "n8n_payload": {
            "enum": [*model_settings.PAYLOAD_FORMS, None],
            "description": "form of each prediction's model object; null follows N8N_PAYLOAD",
        },
        "coin_filter_mode": {"enum": ["all", "whitelist"]},
        "coin_whitelist": {"type": "array", "items": {"type": "string", "maxLength": 64}},
    }
)
IGNORE_BODY = _obj(
    {
        "ignore_negative_seconds": SECONDS,
        "ignore_positive_seconds": SECONDS,
        "ignore_alert_seconds": SECONDS,
    }
)
HEALTH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status", "reasons", "checks"],
    "properties": {
        "status": {"enum": ["healthy", "warning", "degraded"]},
        "reasons": {"type": "array", "items": {"type": "string"}},
        "checks": {"type": "object"},
    },
}

SHARDS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["shard_count", "this_holder", "unheld", "holders", "roles", "shards"],
    "properties": {
        "shard_count": {"type": "integer"},
        "this_holder": {"type": ["string", "null"], "description": "the answering process"},
        "unheld": {"type": "integer", "description": "shards no live process holds"},
        "holders": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "holder": {"type": "string"},
                    "host": {"type": "string"},
                    "pid": {"type": "integer"},
                    "started_at": ISO_TIME,
                    "lease_expires_at": ISO_TIME,
                    "shards_held": {"type": "integer"},
                },
            },
        },
        "roles": {
            "type": "array",
            "description": "roles run by one process at a time among all replicas",
            "items": {
                "type": "object",
                "properties": {
                    "role": {"type": "string", "description": "housekeeping: evaluator, retention"},
                    "holder": {"type": ["string", "null"], "description": "null: free or expired"},
                    "host": {"type": ["string", "null"]},
                    "pid": {"type": ["integer", "null"]},
                    "generation": {"type": "integer"},
                    "lease_expires_at": {"type": ["string", "null"], "format": "date-time"},
                    "claimed_at": {"type": ["string", "null"], "format": "date-time"},
                },
            },
        },
        "shards": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "shard": {"type": "integer"},
                    "holder": {"type": ["string", "null"]},
                    "generation": {"type": "integer"},
                    "lease_expires_at": {"type": ["string", "null"], "format": "date-time"},
                    "cursor": {"type": "integer"},
                    "cursor_timestamp": {"type": ["string", "null"], "format": "date-time"},
                    "lag_seconds": {"type": ["number", "null"]},
                    "ids_behind": {"type": "integer"},
                },
            },
        },
    },
}

JOB_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "status": {"enum": ["pending", "delivered", "dead", "waiting"]},
        "target_url": {"type": "string", "description": "secrets masked"},
        "coin_id": {"type": "string"},
        "data_timestamp": ISO_TIME,
        "active_model_ids": {"type": "array", "items": {"type": "integer"}},
        "model_ids": {"type": "array", "items": {"type": "integer"}},
        "attempts": {"type": "integer"},
        "last_error": {
            "type": ["string", "null"],
            "description": "status code and a fixed reason; never the receiver's body",
        },
        "last_status_code": {"type": ["integer", "null"]},
        "created_at": ISO_TIME,
        "first_attempt_at": {"type": ["string", "null"], "format": "date-time"},
        "last_attempt_at": {"type": ["string", "null"], "format": "date-time"},
        "idempotency_key": {"type": "string"},
        "payload": {"type": "object", "description": "the body as sent (CONTRACTS.md 4)"},
    },
}
JOB_LIST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["total", "limit", "offset", "jobs"],
    "properties": {
        "total": {"type": "integer"},
        "limit": {"type": "integer"},
        "offset": {"type": "integer"},
        "jobs": {"type": "array", "items": JOB_SCHEMA},
    },
}
ENDPOINT_SCHEMA: dict[str, Any] = {
    "type": ["object", "null"],
    "properties": {
        "target_url": {"type": "string"},
        "status": {"enum": ["failing", "missing"]},
        "failing_since": ISO_TIME,
        "missing_since": {"type": ["string", "null"], "format": "date-time"},
        "last_status_code": {"type": ["integer", "null"]},
    },
}
LOSSES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status", "reasons", "dead_last_hour", "waiting", "models"],
    "properties": {
        "status": {"enum": ["ok", "degraded"]},
        "reasons": {"type": "array", "items": {"type": "string"}},
        "window_seconds": {"type": "integer"},
        "dead_last_hour": {"type": "integer"},
        "dead_total": {"type": "integer"},
        "waiting": {"type": "integer"},
        "missing_endpoints": {"type": "array", "items": ENDPOINT_SCHEMA},
        "models": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "active_model_id": {"type": "integer"},
                    "dead_last_hour": {"type": "integer"},
                    "waiting": {"type": "integer"},
                },
            },
        },
    },
}
RETRY_ALL_BODY = _obj(
    {
        "statuses": {
            "type": "array",
            "minItems": 1,
            "items": {"enum": ["dead", "waiting"]},
        },
        "active_model_id": ID,
    },
    required=("statuses",),
)
N8N_STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {
            "enum": ["disabled", "no_url", "degraded", "no_attempts", "ok", "retrying", "failing"]
        },
        "reasons": {"type": "array", "items": {"type": "string"}},
        "endpoint": ENDPOINT_SCHEMA,
        "jobs": {
            "type": "object",
            "properties": {
                k: {"type": "integer"} for k in ("pending", "delivered", "dead", "waiting")
            },
        },
        "losses_last_hour": {
            "type": "object",
            "properties": {"dead": {"type": "integer"}, "waiting": {"type": "integer"}},
        },
        "dead_jobs": {"type": "array", "items": JOB_SCHEMA, "maxItems": 20},
        "waiting_jobs": {"type": "array", "items": JOB_SCHEMA, "maxItems": 20},
    },
}
CAPS_BODY = _obj({"max_open_negative": CAP, "max_open_positive": CAP, "max_open_alert": CAP})

OPERATIONS: tuple[Operation, ...] = (
    # System
    Operation(
        "GET",
        "/health",
        "Health: 200 healthy, 503 degraded with reasons",
        SYS,
        responses={200: "healthy", 503: "degraded"},
        schemas={200: HEALTH_SCHEMA, 503: HEALTH_SCHEMA},
        description="503 `degraded`: the service itself is unwell (database, intake, lag,"
        " shutting down). 200 `warning`: it works, but webhook jobs died in the last hour or"
        " wait for a missing endpoint; `reasons` says so (prefix `webhooks:`) and"
        " `checks.webhooks` counts them. Not a 503: restarting the service cannot fix an"
        " n8n workflow, and the API is what fixes the URL and retries the jobs.",
    ),
    Operation(
        "GET",
        "/api/health",
        "Health (same as /health)",
        SYS,
        responses={200: "healthy", 503: "degraded"},
        schemas={200: HEALTH_SCHEMA, 503: HEALTH_SCHEMA},
    ),
    Operation("GET", "/metrics", "Prometheus metrics", SYS, content_type="text/plain"),
    Operation(
        "GET",
        "/api/metrics",
        "Prometheus metrics (same as /metrics)",
        SYS,
        content_type="text/plain",
    ),
    Operation("GET", "/api/config", "Effective configuration without secrets", SYS),
    Operation("GET", "/api/stats", "Service statistics: uptime, intake, predictions, outbox", SYS),
    Operation(
        "GET",
        "/api/shards",
        "Coin shards: holder, lease, intake cursor and lag of each",
        SYS,
        schemas={200: SHARDS_SCHEMA},
        description="Coins are hashed into SHARD_COUNT shards; each running process (replica)"
        " holds leases on a fair share of them (docs/scale-out.md). Per shard: `holder`"
        " (null: free or expired, taken over within SHARD_LEASE_SECONDS), lease `generation`"
        " (grows with every claim), `cursor` (coin_metrics id up to which its rows are"
        " processed), `lag_seconds` (now minus the newest tick time at the cursor) and"
        " `ids_behind` (newest coin_metrics id minus the cursor). `holders` lists the live"
        " processes with how many shards each holds. `roles`: work one process at a time"
        " runs among all replicas (`housekeeping`: the evaluator and retention), with the"
        " holder of its lease (taken over within SHARD_LEASE_SECONDS when it dies, at once"
        " when it stops cleanly).",
    ),
    Operation("GET", "/api/openapi.json", "This document", SYS),
    Operation("GET", "/api", "Links to what the API offers (docs, OpenAPI, health, …)", SYS),
    Operation(
        "GET", "/api/docs", "Interactive API page (Swagger UI)", SYS, content_type="text/html"
    ),
    Operation(
        "GET",
        "/api/docs/init.js",
        "Script of the interactive API page",
        SYS,
        content_type="application/javascript",
    ),
    Operation(
        "GET", "/api/docs/swagger-ui.css", "Swagger UI style sheet", SYS, content_type="text/css"
    ),
    Operation(
        "GET",
        "/api/docs/swagger-ui-bundle.js",
        "Swagger UI",
        SYS,
        content_type="application/javascript",
    ),
    Operation(
        "GET",
        "/api/docs/swagger-ui-standalone-preset.js",
        "Swagger UI layout",
        SYS,
        content_type="application/javascript",
    ),
    Operation("GET", "/", "Status page (HTML)", SYS, content_type="text/html"),
    # Models
    Operation(
        "GET",
        "/api/models/available",
        "READY models of the Training Service",
        MODEL,
        responses={502: "Training Service unreachable"},
    ),
    Operation(
        "GET",
        "/api/models/available/{model_id}",
        "One model of the Training Service",
        MODEL,
        params=(_id("model_id", "ml_models id"),),
        responses={404: "unknown model", 502: "Training Service unreachable"},
    ),
    Operation(
        "POST",
        "/api/models/import",
        "Import a READY model and activate it",
        MODEL,
        body=_obj({"model_id": ID}, ("model_id",)),
        mutating=True,
        responses={
            201: "imported",
            404: "unknown model",
            409: "already imported",
            422: "refused",
            502: "Training Service unreachable",
        },
    ),
    Operation(
        "GET",
        "/api/models",
        "Imported models",
        MODEL,
        params=(_q("include_inactive", {"type": "boolean"}, "default true"),),
    ),
    Operation(
        "GET",
        "/api/models/active",
        "Active models",
        MODEL,
        params=(_q("include_inactive", {"type": "boolean"}, "default false"),),
    ),
    Operation(
        "GET",
        "/api/models/{id}",
        "One imported model",
        MODEL,
        params=(_id(),),
        responses={404: "unknown model"},
    ),
    Operation(
        "DELETE",
        "/api/models/{id}",
        "Delete a model, its file, predictions and state",
        MODEL,
        params=(_id(),),
        mutating=True,
        responses={404: "unknown model", 409: "import or reload in progress"},
    ),
    Operation(
        "POST",
        "/api/models/{id}/activate",
        "Activate",
        MODEL,
        params=(_id(),),
        mutating=True,
        responses={404: "unknown model", 409: "model file missing or unusable"},
    ),
    Operation(
        "POST",
        "/api/models/{id}/deactivate",
        "Deactivate",
        MODEL,
        params=(_id(),),
        mutating=True,
        responses={404: "unknown model"},
    ),
    Operation(
        "POST",
        "/api/models/{id}/reload",
        "Re-verify the model file, download it again if missing or altered, hot reload",
        MODEL,
        params=(_id(),),
        mutating=True,
        responses={
            404: "unknown model",
            409: "import or delete in progress",
            422: "refused",
            502: "Training Service unreachable",
        },
    ),
    Operation(
        "PATCH",
        "/api/models/{id}/rename",
        "Rename",
        MODEL,
        params=(_id(),),
        # null or "" restores the Training Service's name
        body=_obj({"name": {"type": ["string", "null"], "maxLength": MAX_NAME_LENGTH}}, ("name",)),
        mutating=True,
        responses={404: "unknown model"},
    ),
    Operation(
        "POST",
        "/api/models/{id}/update-metrics",
        "Copy the training metrics again from the Training Service",
        MODEL,
        params=(_id(),),
        mutating=True,
        responses={
            404: "unknown model, or gone at the Training Service",
            502: "Training Service unreachable",
        },
    ),
    Operation(
        "GET",
        "/api/models/{id}/alert-config",
        "Alert and webhook settings",
        ALERTS,
        params=(_id(),),
        responses={404: "unknown model"},
    ),
    Operation(
        "PATCH",
        "/api/models/{id}/alert-config",
        "Change alert and webhook settings (only the fields named)",
        ALERTS,
        params=(_id(),),
        body=ALERT_CONFIG_BODY,
        mutating=True,
        responses={404: "unknown model", 422: "invalid field"},
        description="`n8n_webhook_url` is refused (422 on that field) when it is, or resolves"
        " to, a loopback, link-local, private or metadata address, or this service itself;"
        " the message names WEBHOOK_ALLOWED_NETWORKS, which opens networks (e.g. an n8n on"
        " the LAN). Delivery checks again after DNS resolution. Changing the URL moves the"
        " model's waiting jobs (endpoint missing) to the new URL when every model they carry"
        " points there. `n8n_payload`: `full`, `compact` or null (global N8N_PAYLOAD).",
    ),
    Operation(
        "GET",
        "/api/models/{id}/ignore-settings",
        "Ignore windows per tag",
        ALERTS,
        params=(_id(),),
        responses={404: "unknown model"},
    ),
    Operation(
        "PATCH",
        "/api/models/{id}/ignore-settings",
        "Change ignore windows",
        ALERTS,
        params=(_id(),),
        body=IGNORE_BODY,
        mutating=True,
        responses={404: "unknown model", 422: "invalid field"},
    ),
    Operation(
        "GET",
        "/api/models/{id}/max-log-entries",
        "Caps of open predictions per coin and tag",
        ALERTS,
        params=(_id(),),
        responses={404: "unknown model"},
    ),
    Operation(
        "PATCH",
        "/api/models/{id}/max-log-entries",
        "Change the caps",
        ALERTS,
        params=(_id(),),
        body=CAPS_BODY,
        mutating=True,
        responses={404: "unknown model", 422: "invalid field"},
    ),
    Operation(
        "GET",
        "/api/models/{id}/n8n-status",
        "Webhook delivery status of this model",
        HOOKS,
        params=(_id(),),
        responses={404: "unknown model"},
        schemas={200: N8N_STATUS_SCHEMA},
        description="`status` is `degraded` (with `reasons`) when jobs carrying this model"
        " died in the last hour or wait for a missing endpoint; `endpoint` is the state of"
        " the effective URL when it fails (`missing`: 404 beyond"
        " WEBHOOK_NOT_FOUND_GRACE_SECONDS). Errors are a status code and a fixed reason,"
        " never the receiver's body. `dead_jobs` and `waiting_jobs` preview 20 each; retry"
        " them with POST /api/webhooks/retry-all {active_model_id}.",
    ),
    Operation(
        "GET",
        "/api/models/{id}/statistics",
        "Live quality next to training quality",
        STATS,
        params=_empty_ok(
            (
                _id(),
                _q("date_from", ISO_TIME, "data_timestamp from (inclusive)"),
                _q("date_to", ISO_TIME, "data_timestamp to (inclusive)"),
                _q(
                    "target_precision",
                    {"type": "number", "minimum": 0, "maximum": 1},
                    "thresholds.lowest_threshold_for_target: the lowest alert threshold whose "
                    "precision reached this",
                ),
            )
        ),
        responses={400: "invalid filter", 404: "unknown model"},
    ),
    Operation(
        "GET",
        "/api/models/{id}/coins/{coin_id}/details",
        "Price history around this model's predictions for a coin",
        PRED,
        params=_empty_ok(
            (
                _id(),
                Param(
                    "coin_id",
                    "path",
                    {"type": "string", "minLength": 1, "maxLength": 64},
                    "mint",
                    True,
                ),
                _q(
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": 1000},
                    "latest predictions",
                ),
                _q("points", {"type": "integer", "minimum": 1, "maximum": 10000}, "price rows"),
            )
        ),
        responses={400: "invalid parameter", 404: "unknown model or no prediction for the coin"},
    ),
    Operation(
        "DELETE",
        "/api/models/{id}/predictions",
        "Delete this model's predictions",
        PRED,
        params=(_id(),),
        mutating=True,
        responses={404: "unknown model"},
    ),
    # Predictions
    Operation(
        "POST",
        "/api/predict",
        "Predict now for one coin (stored and sent)",
        PRED,
        body=_obj(
            {
                "coin_id": {"type": "string", "minLength": 1, "maxLength": 64},
                "model_ids": {"type": "array", "items": ID},
                "timestamp": ISO_TIME,
            },
            ("coin_id",),
        ),
        mutating=True,
        responses={
            404: "unknown coin or model",
            409: "no active model is running, or the model is restarting",
            422: "invalid field",
            503: "the prediction actors are not running",
        },
    ),
    Operation(
        "GET",
        "/api/predictions",
        "Predictions with filters and a real total; each has model_mode (live, shadow)",
        PRED,
        params=_empty_ok(
            (
                _q("coin_id", {"type": "string"}),
                _q("active_model_id", ID),
                _q("model_id", ID),
                _q("tag", {"enum": ["negative", "positive", "alert"]}),
                _q(
                    "evaluation_result",
                    {"enum": ["success", "failed", "not_applicable", "pending"]},
                ),
                _q("probability_min", {"type": "number", "minimum": 0, "maximum": 1}),
                _q("probability_max", {"type": "number", "minimum": 0, "maximum": 1}),
                _q("date_from", ISO_TIME, "data_timestamp from (inclusive)"),
                _q("date_to", ISO_TIME, "data_timestamp to (inclusive)"),
                _q("data_from", ISO_TIME, "alias of date_from"),
                _q("data_to", ISO_TIME, "alias of date_to"),
                _q("predicted_from", ISO_TIME, "predicted_at from (inclusive)"),
                _q("predicted_to", ISO_TIME, "predicted_at to (inclusive)"),
                *PAGE,
            )
        ),
        responses={400: "invalid filter"},
    ),
    Operation(
        "GET",
        "/api/predictions/latest/{coin_id}",
        "Latest prediction per model, each with model_mode (live, shadow)",
        PRED,
        params=(
            Param(
                "coin_id", "path", {"type": "string", "minLength": 1, "maxLength": 64}, "mint", True
            ),
        ),
        responses={400: "coin_id longer than 64 characters", 404: "no prediction for this coin"},
    ),
    # Shadow mode
    Operation(
        "PATCH",
        "/api/models/{id}/mode",
        "Set live (alerts sent) or shadow (predicted, stored, evaluated, never sent)",
        MODEL,
        params=(_id(),),
        body=_obj({"mode": {"enum": ["live", "shadow"]}}, ("mode",)),
        mutating=True,
        responses={404: "unknown model", 422: "invalid field"},
    ),
    Operation(
        "POST",
        "/api/models/{id}/promote",
        "Make a shadow model live",
        MODEL,
        params=(_id(),),
        mutating=True,
        responses={404: "unknown model"},
    ),
    Operation(
        "GET",
        "/api/models/compare",
        "Models side by side on the ticks they both predicted",
        STATS,
        params=(
            Param("ids", "query", {"type": "string"}, "2 to 5 active model ids, comma-sep.", True),
            *_empty_ok((_q("date_from", ISO_TIME), _q("date_to", ISO_TIME))),
        ),
        responses={400: "invalid ids or filter", 404: "unknown model"},
    ),
    # Backtests
    Operation(
        "POST",
        "/api/backtests",
        "Queue a backtest of a Training Service model (runs in a worker process)",
        BACKTESTS,
        body=_obj({"model_id": ID, "from": ISO_TIME, "to": ISO_TIME}, ("model_id",)),
        mutating=True,
        responses={
            202: "queued; Location names the backtest",
            404: "no such model at the Training Service (and not imported)",
            422: "invalid field, or a model an import would refuse",
            502: "the Training Service is unreachable or failed",
        },
    ),
    Operation(
        "GET",
        "/api/backtests",
        "Recent backtests, newest first",
        BACKTESTS,
        params=_empty_ok((_q("limit", {"type": "integer", "minimum": 1, "maximum": 200}),)),
    ),
    Operation(
        "GET",
        "/api/backtests/{backtest_id}",
        "A backtest: status and progress, then its summary",
        BACKTESTS,
        params=(_id("backtest_id", "backtest id"),),
        responses={400: "invalid backtest id", 404: "unknown backtest"},
    ),
    Operation(
        "GET",
        "/api/backtests/{backtest_id}/ticks",
        "A backtest's scored ticks, in time order (paged)",
        BACKTESTS,
        params=(
            _id("backtest_id", "backtest id"),
            *_empty_ok(
                (
                    _q("tag", {"enum": ["negative", "positive", "alert"]}),
                    _q("outcome", {"enum": ["success", "failed", "not_applicable", "pending"]}),
                    *PAGE,
                )
            ),
        ),
        responses={400: "invalid backtest id or filter", 404: "unknown backtest"},
    ),
    Operation(
        "GET",
        "/api/backtests/{backtest_id}/coins/{coin_id}",
        "A coin's closes around one of the backtest's ticks",
        BACKTESTS,
        params=(
            _id("backtest_id", "backtest id"),
            Param(
                "coin_id", "path", {"type": "string", "minLength": 1, "maxLength": 64}, "mint", True
            ),
            Param("at", "query", ISO_TIME, "the tick's time", required=True),
            _q("minutes", {"type": "integer", "minimum": 1, "maximum": 1440}, "either side"),
        ),
        responses={400: "invalid id, coin or time", 404: "unknown backtest"},
    ),
    Operation(
        "DELETE",
        "/api/backtests/{backtest_id}",
        "Delete a backtest and its ticks (stops it when running)",
        BACKTESTS,
        params=(_id("backtest_id", "backtest id"),),
        mutating=True,
        responses={400: "invalid backtest id", 404: "unknown backtest"},
    ),
    Operation(
        "GET",
        "/api/predictions/timeline",
        "Predictions, alerts, outcomes and row-to-prediction delay per time bin and model "
        "(bins of 1 min to 3 h, fitting the span; aggregated in SQL)",
        PRED,
        params=_empty_ok((_q("hours", {"type": "integer", "minimum": 1, "maximum": 168}),)),
        responses={400: "invalid parameter"},
    ),
    # Statistics
    Operation(
        "GET",
        "/api/alerts/statistics",
        "Alert outcomes, profit and loss",
        STATS,
        params=_empty_ok(
            (_q("active_model_id", ID), _q("date_from", ISO_TIME), _q("date_to", ISO_TIME))
        ),
        responses={400: "invalid filter"},
    ),
    # Webhooks
    Operation(
        "GET",
        "/api/webhooks/dead",
        "Webhook jobs that were given up",
        HOOKS,
        params=_empty_ok((*PAGE, _q("active_model_id", ID, "only jobs carrying this model"))),
        schemas={200: JOB_LIST_SCHEMA},
    ),
    Operation(
        "GET",
        "/api/webhooks/waiting",
        "Webhook jobs waiting for a missing endpoint",
        HOOKS,
        params=_empty_ok((*PAGE, _q("active_model_id", ID, "only jobs carrying this model"))),
        schemas={200: JOB_LIST_SCHEMA},
        description="Jobs whose URL answered 404 beyond WEBHOOK_NOT_FOUND_GRACE_SECONDS"
        " (n8n workflow inactive or deleted). They are never dead and never retried by"
        " themselves: they go out again when the URL answers 2xx to a new job, when every"
        " model they carry points to another URL (PATCH alert-config), or by"
        " POST /api/webhooks/retry-all.",
    ),
    Operation(
        "GET",
        "/api/webhooks/losses",
        "Dead (last hour) and waiting webhook jobs, in total and per model",
        HOOKS,
        schemas={200: LOSSES_SCHEMA},
        description="For an overview: `status` is `degraded` when any job died in the last"
        " hour or waits; `missing_endpoints` lists the URLs (secrets masked) that answer 404"
        " beyond the grace; `models` gives the counts per active model id (models without"
        " losses are left out).",
    ),
    Operation(
        "POST",
        "/api/webhooks/retry-all",
        "Send every dead and/or waiting webhook job again",
        HOOKS,
        body=RETRY_ALL_BODY,
        mutating=True,
        schemas={
            200: {
                "type": "object",
                "properties": {
                    "requeued": {"type": "integer"},
                    "statuses": {"type": "array", "items": {"enum": ["dead", "waiting"]}},
                    "active_model_id": {"type": ["integer", "null"]},
                },
            }
        },
        description='One click for the dashboard: `{"statuses": ["dead", "waiting"]}`'
        " (optionally with `active_model_id`) makes every such job due now with a fresh"
        " retry budget (attempts and age reset; X-Pump-Attempt"
        " restarts at 1, X-Pump-First-Attempt-At keeps the first attempt). Receivers"
        " deduplicate by Idempotency-Key.",
    ),
    Operation(
        "POST",
        "/api/webhooks/{job_id}/retry",
        "Send a dead or waiting webhook job again",
        HOOKS,
        params=(_id("job_id", "outbox job id"),),
        mutating=True,
        responses={404: "unknown job", 409: "job is neither dead nor waiting"},
    ),
)


def _operation_doc(op: Operation) -> dict[str, Any]:
    responses: dict[str, Any] = {
        str(next((s for s in (201, 202) if op.method == "POST" and s in op.responses), 200)): {
            "description": "OK",
            "content": {
                op.content_type: {
                    "schema": {} if op.content_type != JSON else {"type": ["object", "array"]}
                }
            },
        }
    }
    error = {"description": "", "content": {JSON: {"schema": ERROR_SCHEMA}}}
    for status, description in op.responses.items():
        if status in (200, 201, 202):
            continue
        responses[str(status)] = {**error, "description": description}
    for status, schema in op.schemas.items():
        described = responses.get(str(status), {"description": "OK"})
        responses[str(status)] = {**described, "content": {JSON: {"schema": schema}}}
    if op.body is not None or any(p.where == "query" for p in op.params):
        responses.setdefault("400", {**error, "description": "malformed request"})
        responses.setdefault("422", {**error, "description": "invalid field"})
    if any(p.where == "path" and p.schema.get("type") == "string" for p in op.params):
        responses.setdefault("400", {**error, "description": "malformed path parameter"})
    if op.mutating:
        responses["401"] = {**error, "description": "missing or invalid bearer token"}
        responses["429"] = {**error, "description": "too many failed authentications"}
    doc: dict[str, Any] = {
        "summary": op.summary,
        "tags": [op.tag],
        "operationId": f"{op.method.lower()}_{op.path.strip('/').replace('/', '_')}".replace(
            "{", ""
        )
        .replace("}", "")
        .replace(".", "_")
        or "root",
        "responses": responses,
    }
    if op.description:
        doc["description"] = op.description
    if op.params:
        doc["parameters"] = [
            {
                "name": p.name,
                "in": p.where,
                "required": p.required or p.where == "path",
                "schema": p.schema,
                **({"description": p.description} if p.description else {}),
                **({"allowEmptyValue": True} if p.allow_empty else {}),
            }
            for p in op.params
        ]
    if op.body is not None:
        doc["requestBody"] = {"required": op.body_required, "content": {JSON: {"schema": op.body}}}
    if op.mutating:
        doc["security"] = [{"bearer": []}]
    return doc


def openapi_document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation_doc(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pump-predictor",
            "version": VERSION,
            "description": "Real-time ML predictions for pump.fun coins. Errors are "
            '`{"error": {"code", "message", "details"}}`.',
        },
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": ERROR_SCHEMA},
        },
        "paths": paths,
    }


def documented_routes() -> set[tuple[str, str]]:
    return {(op.method, op.path) for op in OPERATIONS}


def registered_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, path) of every route, with `{id:\\d+}` written as `{id}`."""
    import re

    found: set[tuple[str, str]] = set()
    for route in app.router.routes():
        if route.method in {"HEAD", "OPTIONS"}:
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or ""
        path = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)
        found.add((route.method, path))
    return found


routes = web.RouteTableDef()


@routes.get("/api/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())
