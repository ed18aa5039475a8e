"""A model's mode: `live` (alerts go to webhooks) or `shadow` (predicted, stored and
evaluated, never sent). The predictors read it from the model row (hot reload via
the model-change NOTIFY, as every setting); the webhook rules read it in
`actors.webhooks.payload.WebhookModel.from_row`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import asyncpg

from storage.models.model_settings import notify_model_changed

MODES: Final = ("live", "shadow")


async def set_mode(conn: asyncpg.Connection, active_model_id: int, mode: str) -> str | None:
    """Set the mode and NOTIFY in one transaction; the previous mode, None if no model."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    async with conn.transaction():
        previous: str | None = await conn.fetchval(
            "SELECT mode FROM active_models WHERE id = $1 FOR UPDATE", active_model_id
        )
        if previous is None:
            return None
        if previous != mode:
            await conn.execute(
                "UPDATE active_models SET mode = $2, updated_at = now() WHERE id = $1",
                active_model_id,
                mode,
            )
            await notify_model_changed(conn, active_model_id, "settings")
    return previous


async def modes_of(conn: asyncpg.Connection, active_model_ids: Iterable[int]) -> dict[int, str]:
    """The mode of each of these models that still exists (a deleted model has none).

    The prediction reads return stored rows; a row's model may have changed mode since,
    and lists mark predictions by the model's mode now, joined here by id.
    """
    ids = sorted(set(active_model_ids))
    if not ids:
        return {}
    rows = await conn.fetch("SELECT id, mode FROM active_models WHERE id = ANY($1::bigint[])", ids)
    return {int(r["id"]): str(r["mode"]) for r in rows}
