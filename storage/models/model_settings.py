"""Per-model alert settings on `active_models`: read, and change only named fields.

A change NOTIFYs `MODELS_CHANNEL` in the same transaction, so the model-sync
actor reloads the model's settings exactly when the change is visible (a
NOTIFY is delivered only on commit). The UPDATE is built from a fixed column
allow-list; values always travel as parameters. The service being replaced
reset omitted fields on PATCH; here a column not named keeps its value.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

# LISTEN channel of the model-sync actor; payload {"active_model_id": id, "action": ...}.
MODELS_CHANNEL = "pump_predictor_models"

# The values of `n8n_send_modes` and `n8n_payload`, defined once for the API's checks and
# document, the dashboard's choices and the webhook payload (actors.webhooks.payload).
SEND_MODES = ("all", "alerts_only", "positive_only", "negative_only")
PAYLOAD_FORMS = ("full", "compact")

ALERT_COLUMNS = (
    "alert_threshold",
    "n8n_webhook_url",
    "n8n_enabled",
    "n8n_send_modes",
    "n8n_payload",
    "coin_filter_mode",
    "coin_whitelist",
)
IGNORE_COLUMNS = ("ignore_negative_seconds", "ignore_positive_seconds", "ignore_alert_seconds")
CAP_COLUMNS = ("max_open_negative", "max_open_positive", "max_open_alert")
SETTINGS_COLUMNS = frozenset(ALERT_COLUMNS + IGNORE_COLUMNS + CAP_COLUMNS)


@dataclass(frozen=True, slots=True)
class ModelSettings:
    active_model_id: int
    model_id: int
    name: str  # custom name when set
    is_active: bool
    alert_threshold: float
    n8n_webhook_url: str | None
    n8n_enabled: bool
    n8n_send_modes: tuple[str, ...]
    n8n_payload: str | None  # None: the global N8N_PAYLOAD
    coin_filter_mode: str
    coin_whitelist: tuple[str, ...]
    ignore_negative_seconds: int
    ignore_positive_seconds: int
    ignore_alert_seconds: int
    max_open_negative: int
    max_open_positive: int
    max_open_alert: int
    updated_at: datetime


_SELECT = """
id, model_id, coalesce(custom_name, name) AS display_name, is_active, alert_threshold,
n8n_webhook_url, n8n_enabled, n8n_send_modes, n8n_payload, coin_filter_mode, coin_whitelist,
ignore_negative_seconds, ignore_positive_seconds, ignore_alert_seconds,
max_open_negative, max_open_positive, max_open_alert, updated_at
"""


def _settings(r: asyncpg.Record) -> ModelSettings:
    return ModelSettings(
        active_model_id=r["id"],
        model_id=r["model_id"],
        name=r["display_name"],
        is_active=r["is_active"],
        alert_threshold=r["alert_threshold"],
        n8n_webhook_url=r["n8n_webhook_url"],
        n8n_enabled=r["n8n_enabled"],
        n8n_send_modes=tuple(r["n8n_send_modes"]),
        n8n_payload=r["n8n_payload"],
        coin_filter_mode=r["coin_filter_mode"],
        coin_whitelist=tuple(r["coin_whitelist"]),
        ignore_negative_seconds=r["ignore_negative_seconds"],
        ignore_positive_seconds=r["ignore_positive_seconds"],
        ignore_alert_seconds=r["ignore_alert_seconds"],
        max_open_negative=r["max_open_negative"],
        max_open_positive=r["max_open_positive"],
        max_open_alert=r["max_open_alert"],
        updated_at=r["updated_at"],
    )


async def get_settings(conn: asyncpg.Connection, active_model_id: int) -> ModelSettings | None:
    row = await conn.fetchrow(f"SELECT {_SELECT} FROM active_models WHERE id = $1", active_model_id)
    return None if row is None else _settings(row)


async def update_settings(
    conn: asyncpg.Connection,
    active_model_id: int,
    changes: Mapping[str, Any],
    *,
    check: Callable[[ModelSettings], None] | None = None,
) -> ModelSettings | None:
    """Set only the named columns, bump updated_at and NOTIFY, in one transaction.

    `check` sees the row as it would be committed and may raise to roll the
    change back (rules that span fields, e.g. a whitelist mode needs mints).
    Returns None (and changes nothing) when the model does not exist.
    """
    unknown = sorted(set(changes) - SETTINGS_COLUMNS)
    if unknown:
        raise ValueError(f"not a settings column: {', '.join(unknown)}")
    if not changes:
        raise ValueError("no settings to change")
    columns = sorted(changes)
    assignments = ", ".join(f"{column} = ${i + 2}" for i, column in enumerate(columns))
    sql = (
        f"UPDATE active_models SET {assignments}, updated_at = now() "
        f"WHERE id = $1 RETURNING {_SELECT}"
    )
    values = [
        list(changes[c]) if isinstance(changes[c], tuple | list) else changes[c] for c in columns
    ]
    async with conn.transaction():
        row = await conn.fetchrow(sql, active_model_id, *values)
        if row is None:
            return None
        updated = _settings(row)
        if check is not None:
            check(updated)
        await notify_model_changed(conn, active_model_id, "settings")
    return updated


async def notify_model_changed(conn: asyncpg.Connection, active_model_id: int, action: str) -> None:
    """Tell the model-sync actor (delivered when the caller's transaction commits)."""
    payload = json.dumps({"active_model_id": active_model_id, "action": action})
    await conn.execute("SELECT pg_notify($1, $2)", MODELS_CHANNEL, payload)


async def payload_overrides(conn: asyncpg.Connection) -> dict[int, str]:
    """Active model id -> its own webhook payload form, for models that set one."""
    rows = await conn.fetch(
        "SELECT id, n8n_payload FROM active_models WHERE n8n_payload IS NOT NULL"
    )
    return {int(r["id"]): str(r["n8n_payload"]) for r in rows}
