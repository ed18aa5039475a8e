"""A model's newest judged predictions, for thresholds from outcomes.

Read through `storage.predictions.reads.list_predictions`, the one reader of the
prediction store, so this follows any change of its layout. At most `limit`
predictions (newest first): the curve of the last 100 000 outcomes says what a
threshold does now, and the read stays bounded.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from storage.predictions.reads import PredictionFilters, list_predictions

SAMPLE = 100_000
PAGE = 10_000


async def judged_predictions(
    conn: asyncpg.Connection,
    active_model_id: int,
    *,
    date_from: datetime | None = None,
    date_to: datetime | None = None,
    limit: int = SAMPLE,
) -> tuple[list[float], list[int], list[str | None]]:
    """Probability, prediction (0/1) and evaluation result (None: pending) of each."""
    filters = PredictionFilters(
        active_model_id=active_model_id, date_from=date_from, date_to=date_to
    )
    probabilities: list[float] = []
    predicted: list[int] = []
    results: list[str | None] = []
    offset = 0
    while offset < limit:
        _, rows = await list_predictions(
            conn, filters, limit=min(PAGE, limit - offset), offset=offset
        )
        probabilities += [r.probability for r in rows]
        predicted += [r.prediction for r in rows]
        results += [r.evaluation_result for r in rows]
        offset += len(rows)
        if len(rows) < PAGE:
            break
    return probabilities, predicted, results


async def tick_outcomes(
    conn: asyncpg.Connection,
    active_model_id: int,
    *,
    date_from: datetime | None = None,
    date_to: datetime | None = None,
    limit: int = SAMPLE,
) -> dict[tuple[str, datetime], tuple[str, int, str | None]]:
    """(coin, tick time) -> (tag, prediction, evaluation result) of the newest predictions."""
    filters = PredictionFilters(
        active_model_id=active_model_id, date_from=date_from, date_to=date_to
    )
    ticks: dict[tuple[str, datetime], tuple[str, int, str | None]] = {}
    offset = 0
    while offset < limit:
        _, rows = await list_predictions(
            conn, filters, limit=min(PAGE, limit - offset), offset=offset
        )
        for r in rows:
            ticks[(r.coin_id, r.data_timestamp)] = (r.tag, r.prediction, r.evaluation_result)
        offset += len(rows)
        if len(rows) < PAGE:
            break
    return ticks
