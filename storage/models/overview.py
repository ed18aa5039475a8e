"""One read for the status page: active models with their latest activity."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True, slots=True)
class ModelOverview:
    active_model_id: int
    model_id: int
    name: str
    model_type: str
    is_active: bool
    predictions: int
    last_prediction_at: datetime | None
    evaluated: int
    successes: int

    @property
    def live_success_rate(self) -> float | None:
        return self.successes / self.evaluated if self.evaluated else None


@dataclass(frozen=True, slots=True)
class Overview:
    models: list[ModelOverview]
    outbox_pending: int
    outbox_dead: int


_MODELS_SQL = """
SELECT m.id, m.model_id, coalesce(m.custom_name, m.name) AS name, m.model_type, m.is_active,
       coalesce(p.predictions, 0) AS predictions, p.last_prediction_at,
       coalesce(p.evaluated, 0) AS evaluated, coalesce(p.successes, 0) AS successes
FROM active_models m
-- One pass over the predictions for every model (a per-model filter on the view would
-- walk every tick row once per model).
LEFT JOIN (
    SELECT active_model_id,
           count(*) AS predictions,
           max(predicted_at) AS last_prediction_at,
           count(*) FILTER (WHERE evaluation_result IN ('success', 'failed')) AS evaluated,
           count(*) FILTER (WHERE evaluation_result = 'success') AS successes
    FROM predictions GROUP BY active_model_id
) p ON p.active_model_id = m.id
ORDER BY m.is_active DESC, m.id
"""

_OUTBOX_SQL = """
SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
       count(*) FILTER (WHERE status = 'dead') AS dead
FROM webhook_outbox
"""


async def load_overview(pool: asyncpg.Pool) -> Overview:
    async with pool.acquire() as conn:
        rows = await conn.fetch(_MODELS_SQL)
        outbox = await conn.fetchrow(_OUTBOX_SQL)
    models = [
        ModelOverview(
            active_model_id=r["id"],
            model_id=r["model_id"],
            name=r["name"],
            model_type=r["model_type"],
            is_active=r["is_active"],
            predictions=r["predictions"],
            last_prediction_at=r["last_prediction_at"],
            evaluated=r["evaluated"],
            successes=r["successes"],
        )
        for r in rows
    ]
    return Overview(models, outbox["pending"], outbox["dead"])


_STATS_SQL = """
SELECT
    (SELECT count(*) FROM active_models WHERE is_active) AS active_models,
    (SELECT count(*) FROM active_models) AS imported_models,
    (SELECT count(*) FROM predictions) AS predictions_total,
    (SELECT count(*) FROM predictions WHERE predicted_at > now() - interval '1 hour')
        AS predictions_last_hour,
    (SELECT count(*) FROM predictions WHERE evaluation_result IS NULL) AS predictions_pending,
    (SELECT count(DISTINCT coin_id) FROM predictions
        WHERE predicted_at > now() - interval '1 hour') AS coins_last_hour,
    (SELECT max(predicted_at) FROM predictions) AS last_prediction_at,
    (SELECT count(*) FROM webhook_outbox WHERE status = 'pending') AS outbox_pending,
    (SELECT count(*) FROM webhook_outbox WHERE status = 'dead') AS outbox_dead,
    (SELECT count(*) FROM webhook_outbox WHERE status = 'delivered') AS outbox_delivered,
    (SELECT last_id FROM intake_cursor ORDER BY updated_at DESC LIMIT 1) AS intake_cursor_id
"""


async def load_stats(pool: asyncpg.Pool) -> dict[str, object]:
    """Database-side counts for `GET /api/stats` (cheap enough for an operator's poll)."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(_STATS_SQL)
    return dict(row)
