"""The `thresholds` block of GET /api/models/{id}/statistics: thresholds from outcomes.

From the model's newest judged live predictions (storage.predictions.outcome_samples): the
precision/recall curve against the alert threshold, the reliability diagram, and,
with `?target_precision=0.8`, the lowest threshold that reached that precision.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg

from features.outcome_curves import came_true, report
from storage.predictions.outcome_samples import SAMPLE, judged_predictions
from web.routes.predictions import float_param


async def thresholds_from_outcomes(
    conn: asyncpg.Connection,
    active_model_id: int,
    query: Mapping[str, str],
    filters: Mapping[str, Any],
) -> dict[str, Any]:
    target = float_param(query, "target_precision", low=0.0, high=1.0)
    probabilities, predicted, results = await judged_predictions(
        conn, active_model_id, date_from=filters.get("date_from"), date_to=filters.get("date_to")
    )
    block = report(probabilities, came_true(predicted, results), target_precision=target)
    return {"source": f"the newest {SAMPLE} live predictions at most", **block}
