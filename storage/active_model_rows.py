"""The full rows of the active models, as the model-sync actor runs them."""

from __future__ import annotations

from typing import Any

import asyncpg


async def active_rows(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch("SELECT * FROM active_models WHERE is_active ORDER BY id")
    return [dict(r) for r in rows]


async def row_by_id(conn: asyncpg.Connection, active_model_id: int) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM active_models WHERE id = $1", active_model_id)
    return None if row is None else dict(row)
