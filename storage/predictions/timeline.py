"""Predictions counted per time bin and model, for the dashboard's overview charts.

One aggregate read instead of shipping every prediction of a day to the browser.
Bins are over `data_timestamp` (the tick's own time, indexed); the delay of a bin
is `predicted_at - data_timestamp`, i.e. the intake lag plus scoring, which is
the delay a trader sees between a trade and its prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

_SQL = """
SELECT date_bin($3::interval, data_timestamp, $1::timestamptz) AS start,
       active_model_id,
       count(*) AS predictions,
       count(*) FILTER (WHERE tag = 'alert') AS alerts,
       count(*) FILTER (WHERE evaluation_result = 'success') AS success,
       count(*) FILTER (WHERE evaluation_result = 'failed') AS failed,
       percentile_cont(0.5) WITHIN GROUP (
           ORDER BY extract(epoch FROM predicted_at - data_timestamp)) AS delay_p50,
       max(extract(epoch FROM predicted_at - data_timestamp)) AS delay_max
FROM predictions
WHERE data_timestamp >= $1 AND data_timestamp < $2
GROUP BY 1, 2
ORDER BY 1, 2
"""


def bin_for(span: timedelta) -> timedelta:
    """A bin that gives a readable number of bars (60-100) for the span."""
    for limit, size in (
        (timedelta(hours=1), timedelta(minutes=1)),
        (timedelta(hours=6), timedelta(minutes=5)),
        (timedelta(hours=24), timedelta(minutes=15)),
        (timedelta(days=3), timedelta(hours=1)),
    ):
        if span <= limit:
            return size
    return timedelta(hours=3)


@dataclass(frozen=True, slots=True)
class TimelineBin:
    start: datetime
    active_model_id: int
    predictions: int
    alerts: int
    success: int
    failed: int
    delay_p50_seconds: float | None
    delay_max_seconds: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "active_model_id": self.active_model_id,
            "predictions": self.predictions,
            "alerts": self.alerts,
            "success": self.success,
            "failed": self.failed,
            "delay_p50_seconds": self.delay_p50_seconds,
            "delay_max_seconds": self.delay_max_seconds,
        }


async def timeline(
    conn: asyncpg.Connection, start: datetime, end: datetime, bin_size: timedelta
) -> list[TimelineBin]:
    rows = await conn.fetch(_SQL, start, end, bin_size)
    return [
        TimelineBin(
            start=row["start"],
            active_model_id=int(row["active_model_id"]),
            predictions=int(row["predictions"]),
            alerts=int(row["alerts"]),
            success=int(row["success"]),
            failed=int(row["failed"]),
            delay_p50_seconds=None if row["delay_p50"] is None else float(row["delay_p50"]),
            delay_max_seconds=None if row["delay_max"] is None else float(row["delay_max"]),
        )
        for row in rows
    ]
