"""Queries on `active_models`: typed rows, lifecycle changes, deletion.

Every change NOTIFYs `MODELS_CHANNEL` (through `notify_model_changed`) in the
same transaction as the write, so the model-sync actor hears of it exactly
when the change is visible. Functions that write take a connection that is
not already inside a transaction: they open their own, and `delete_model`
removes the model file only after the delete has committed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import structlog

from storage.models.model_settings import notify_model_changed

__all__ = [
    "ActiveModelRow",
    "NewActiveModel",
    "delete_model",
    "get_model",
    "get_model_by_model_id",
    "imported_model_ids",
    "insert_model",
    "list_models",
    "remove_file",
    "rename",
    "set_active",
    "set_file_state",
    "update_file",
    "update_training_metrics",
]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ActiveModelRow:
    """One imported model, as stored (jsonb columns already decoded)."""

    id: int
    model_id: int
    name: str
    custom_name: str | None
    model_type: str
    description: str | None
    target_kind: str
    target_variable: str | None
    target_operator: str | None
    target_value: float | None
    future_minutes: int | None
    price_change_percent: float | None
    target_direction: str | None
    features: tuple[str, ...]
    phases: tuple[int, ...] | None
    params: dict[str, Any]
    training_metrics: dict[str, Any]
    file_path: str
    file_sha256: str
    file_state: str
    file_error: str | None
    is_active: bool
    alert_threshold: float
    n8n_enabled: bool
    n8n_send_modes: tuple[str, ...]
    coin_filter_mode: str
    imported_at: datetime
    updated_at: datetime
    activated_at: datetime | None
    deactivated_at: datetime | None
    mode: str = "live"  # live | shadow (storage.models.model_mode)

    @property
    def display_name(self) -> str:
        return self.custom_name or self.name


@dataclass(frozen=True, slots=True)
class NewActiveModel:
    """What an import writes; the other columns take their defaults."""

    model_id: int
    name: str
    model_type: str
    description: str | None
    target_kind: str
    target_variable: str | None
    target_operator: str | None
    target_value: float | None
    future_minutes: int | None
    price_change_percent: float | None
    target_direction: str | None
    features: tuple[str, ...]
    phases: tuple[int, ...] | None
    params: dict[str, Any]
    training_metrics: dict[str, Any]
    file_path: str
    file_sha256: str


_COLUMNS = """
id, model_id, name, custom_name, model_type, description, target_kind, target_variable,
target_operator, target_value, future_minutes, price_change_percent, target_direction,
features, phases, params, training_metrics, file_path, file_sha256, file_state, file_error,
is_active, alert_threshold, n8n_enabled, n8n_send_modes, coin_filter_mode,
imported_at, updated_at, activated_at, deactivated_at, mode
"""


def _row(r: asyncpg.Record) -> ActiveModelRow:
    phases = r["phases"]
    return ActiveModelRow(
        id=r["id"],
        model_id=r["model_id"],
        name=r["name"],
        custom_name=r["custom_name"],
        model_type=r["model_type"],
        description=r["description"],
        target_kind=r["target_kind"],
        target_variable=r["target_variable"],
        target_operator=r["target_operator"],
        target_value=r["target_value"],
        future_minutes=r["future_minutes"],
        price_change_percent=r["price_change_percent"],
        target_direction=r["target_direction"],
        features=tuple(r["features"]),
        phases=tuple(phases) if phases is not None else None,
        params=dict(r["params"] or {}),
        training_metrics=dict(r["training_metrics"] or {}),
        file_path=r["file_path"],
        file_sha256=r["file_sha256"],
        file_state=r["file_state"],
        file_error=r["file_error"],
        is_active=r["is_active"],
        alert_threshold=r["alert_threshold"],
        n8n_enabled=r["n8n_enabled"],
        n8n_send_modes=tuple(r["n8n_send_modes"]),
        coin_filter_mode=r["coin_filter_mode"],
        imported_at=r["imported_at"],
        updated_at=r["updated_at"],
        activated_at=r["activated_at"],
        deactivated_at=r["deactivated_at"],
        mode=r["mode"],
    )


async def list_models(conn: asyncpg.Connection, include_inactive: bool) -> list[ActiveModelRow]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM active_models WHERE is_active OR $1 ORDER BY id",
        include_inactive,
    )
    return [_row(r) for r in rows]


async def get_model(conn: asyncpg.Connection, active_model_id: int) -> ActiveModelRow | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM active_models WHERE id = $1", active_model_id
    )
    return None if row is None else _row(row)


async def get_model_by_model_id(conn: asyncpg.Connection, model_id: int) -> ActiveModelRow | None:
    """The import of a Training Service model (`ml_models.id`), if any."""
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM active_models WHERE model_id = $1", model_id)
    return None if row is None else _row(row)


async def imported_model_ids(conn: asyncpg.Connection) -> set[int]:
    """`ml_models` ids already imported (active or not)."""
    return {r["model_id"] for r in await conn.fetch("SELECT model_id FROM active_models")}


async def insert_model(conn: asyncpg.Connection, new: NewActiveModel) -> ActiveModelRow:
    """Insert an imported, active model and NOTIFY "imported" in the caller's transaction.

    Raises `asyncpg.UniqueViolationError` when the model is already imported.
    """
    row = await conn.fetchrow(
        f"""
        INSERT INTO active_models (
            model_id, name, model_type, description, target_kind, target_variable,
            target_operator, target_value, future_minutes, price_change_percent,
            target_direction, features, phases, params, training_metrics,
            file_path, file_sha256, file_state, is_active, activated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                'ok', true, now())
        RETURNING {_COLUMNS}
        """,
        new.model_id,
        new.name,
        new.model_type,
        new.description,
        new.target_kind,
        new.target_variable,
        new.target_operator,
        new.target_value,
        new.future_minutes,
        new.price_change_percent,
        new.target_direction,
        list(new.features),
        list(new.phases) if new.phases is not None else None,
        new.params,
        new.training_metrics,
        new.file_path,
        new.file_sha256,
    )
    assert row is not None
    inserted = _row(row)
    await notify_model_changed(conn, inserted.id, "imported")
    return inserted


async def set_active(
    conn: asyncpg.Connection, active_model_id: int, active: bool
) -> tuple[ActiveModelRow, bool] | None:
    """Activate or deactivate; returns (row, changed). No write and no NOTIFY when unchanged."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"""
            UPDATE active_models
            SET is_active = $2,
                activated_at = CASE WHEN $2 THEN now() ELSE activated_at END,
                deactivated_at = CASE WHEN $2 THEN deactivated_at ELSE now() END,
                updated_at = now()
            WHERE id = $1 AND is_active <> $2
            RETURNING {_COLUMNS}
            """,
            active_model_id,
            active,
        )
        if row is None:
            current = await get_model(conn, active_model_id)
            return None if current is None else (current, False)
        await notify_model_changed(conn, active_model_id, "activated" if active else "deactivated")
    return _row(row), True


async def _update_and_notify(
    conn: asyncpg.Connection, active_model_id: int, assignments: str, value: Any, action: str
) -> ActiveModelRow | None:
    """One UPDATE (`assignments` uses $2 for `value`) and its NOTIFY, in one transaction."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"UPDATE active_models SET {assignments}, updated_at = now() "
            f"WHERE id = $1 RETURNING {_COLUMNS}",
            active_model_id,
            value,
        )
        if row is None:
            return None
        await notify_model_changed(conn, active_model_id, action)
    return _row(row)


async def rename(
    conn: asyncpg.Connection, active_model_id: int, name: str | None
) -> ActiveModelRow | None:
    """Set the custom name (None restores the Training Service's name)."""
    return await _update_and_notify(conn, active_model_id, "custom_name = $2", name, "renamed")


async def update_training_metrics(
    conn: asyncpg.Connection, active_model_id: int, metrics: dict[str, Any]
) -> ActiveModelRow | None:
    return await _update_and_notify(
        conn, active_model_id, "training_metrics = $2", metrics, "metrics_updated"
    )


async def update_file(
    conn: asyncpg.Connection,
    active_model_id: int,
    *,
    file_path: str,
    file_sha256: str,
    file_state: str,
    notify_action: str | None,
) -> ActiveModelRow | None:
    """Record a verified (or re-downloaded) model file; NOTIFY `notify_action` if given."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"""
            UPDATE active_models
            SET file_path = $2, file_sha256 = $3, file_state = $4, file_error = NULL,
                updated_at = now()
            WHERE id = $1
            RETURNING {_COLUMNS}
            """,
            active_model_id,
            file_path,
            file_sha256,
            file_state,
        )
        if row is None:
            return None
        if notify_action is not None:
            await notify_model_changed(conn, active_model_id, notify_action)
    return _row(row)


async def set_file_state(
    conn: asyncpg.Connection, active_model_id: int, file_state: str, file_error: str | None
) -> None:
    """Record that the model file is missing or unusable (and why), for the API and the page."""
    await conn.execute(
        "UPDATE active_models SET file_state = $2, file_error = $3, updated_at = now() "
        "WHERE id = $1",
        active_model_id,
        file_state,
        file_error,
    )


def remove_file(path: str | os.PathLike[str]) -> bool:
    """Remove a model file if it is there; True when one was removed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


async def delete_model(conn: asyncpg.Connection, active_model_id: int) -> ActiveModelRow | None:
    """Delete a model (its predictions and scan state cascade), NOTIFY, then remove its file.

    The file goes only after the commit: a rolled-back delete must still find
    its model file. A file that cannot be removed is logged, not an error,
    because the model is gone either way.
    """
    if conn.is_in_transaction():
        raise RuntimeError("delete_model removes a file after its own commit: call it outside")
    async with conn.transaction():
        row = await conn.fetchrow(
            f"DELETE FROM active_models WHERE id = $1 RETURNING {_COLUMNS}", active_model_id
        )
        if row is None:
            return None
        await notify_model_changed(conn, active_model_id, "deleted")
        # Another row never shares a file (one row per model id), but a stale path must not
        # take a live file with it.
        shared = await conn.fetchval(
            "SELECT count(*) FROM active_models WHERE file_path = $1", row["file_path"]
        )
    deleted = _row(row)
    if shared:
        return deleted
    try:
        removed = await anyio.to_thread.run_sync(remove_file, Path(deleted.file_path))
    except OSError as exc:
        log.warning(
            "model deleted but its file could not be removed",
            active_model_id=active_model_id,
            file=deleted.file_path,
            error=str(exc),
        )
        return deleted
    log.info(
        "model deleted",
        active_model_id=active_model_id,
        model_id=deleted.model_id,
        file=deleted.file_path,
        file_removed=removed,
    )
    return deleted


# ---- full rows, as the model-sync actor runs them (every column, as a dict)


async def active_rows(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Every column of the active models: the predictors read settings the API view omits."""
    rows = await conn.fetch("SELECT * FROM active_models WHERE is_active ORDER BY id")
    return [dict(r) for r in rows]


async def full_row(conn: asyncpg.Connection, active_model_id: int) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM active_models WHERE id = $1", active_model_id)
    return None if row is None else dict(row)
