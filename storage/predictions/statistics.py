"""Live model quality from evaluated predictions, counted in SQL.

Vocabulary (one definition, used by every route and the dashboard):

- success / failed: the prediction (0/1) matched / did not match whether the
  target came true; not_applicable says nothing about quality and is counted
  apart; pending = not evaluated yet.
- success rate = success / (success + failed), None when nothing was judged.
- confusion matrix: positive = prediction 1, actual = came true, so
  tp = 1 & success, fp = 1 & failed, tn = 0 & success, fn = 0 & failed.
- alerts = tag 'alert'; non-alerts = tags 'negative' and 'positive'.
- alert changes: the sum of actual_change_pct over judged alerts; profit sums
  the positive changes, loss the negative ones, net both. These are price
  changes as measured, not adjusted for a model's direction.

Filters: one active model, and a data_timestamp range (both ends inclusive).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg


@dataclass(frozen=True, slots=True)
class OutcomeCounts:
    total: int
    pending: int
    success: int
    failed: int
    not_applicable: int

    @property
    def judged(self) -> int:
        return self.success + self.failed

    @property
    def success_rate(self) -> float | None:
        return self.success / self.judged if self.judged else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "pending": self.pending,
            "evaluated": self.total - self.pending,
            "success": self.success,
            "failed": self.failed,
            "not_applicable": self.not_applicable,
            "success_rate": self.success_rate,
        }


@dataclass(frozen=True, slots=True)
class ConfusionMatrix:
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def accuracy(self) -> float | None:
        n = self.tp + self.fp + self.tn + self.fn
        return (self.tp + self.tn) / n if n else None

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p is not None and r is not None and p + r else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "confusion_matrix": {"tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn},
            "precision": self.precision,
            "recall": self.recall,
            "accuracy": self.accuracy,
            "f1": self.f1,
        }


@dataclass(frozen=True, slots=True)
class AlertChanges:
    judged: int  # judged alerts with a measured change
    profit_pct: float
    loss_pct: float

    @property
    def net_pct(self) -> float:
        return self.profit_pct + self.loss_pct

    def as_dict(self) -> dict[str, Any]:
        return {
            "alerts_with_change": self.judged,
            "profit_pct": self.profit_pct,
            "loss_pct": self.loss_pct,
            "net_pct": self.net_pct,
        }


@dataclass(frozen=True, slots=True)
class LiveStatistics:
    overall: OutcomeCounts
    alerts: OutcomeCounts
    non_alerts: OutcomeCounts
    confusion: ConfusionMatrix
    alert_changes: AlertChanges
    first_data_timestamp: datetime | None
    last_data_timestamp: datetime | None

    def as_dict(self) -> dict[str, Any]:
        body = self.overall.as_dict()
        body.update(
            {
                "alerts": self.alerts.as_dict(),
                "non_alerts": self.non_alerts.as_dict(),
                "live": self.confusion.as_dict(),
                "alert_changes": self.alert_changes.as_dict(),
                "first_data_timestamp": _iso(self.first_data_timestamp),
                "last_data_timestamp": _iso(self.last_data_timestamp),
            }
        )
        return body


@dataclass(frozen=True, slots=True)
class ModelInfo:
    active_model_id: int
    model_id: int
    name: str
    model_type: str
    is_active: bool
    target: dict[str, Any]
    training_metrics: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ModelStatistics:
    model: ModelInfo
    live: LiveStatistics


@dataclass(frozen=True, slots=True)
class StatisticsReport:
    totals: LiveStatistics
    models: list[ModelStatistics]


@dataclass(frozen=True, slots=True)
class ModelSummary:
    """What the model list shows next to each model."""

    active_model_id: int
    predictions: int
    last_prediction_at: datetime | None
    pending: int
    success: int
    failed: int

    @property
    def live_success_rate(self) -> float | None:
        judged = self.success + self.failed
        return self.success / judged if judged else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "predictions": self.predictions,
            "last_prediction_at": _iso(self.last_prediction_at),
            "pending": self.pending,
            "success": self.success,
            "failed": self.failed,
            "live_success_rate": self.live_success_rate,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


_FILTER = """
    ($1::bigint IS NULL OR active_model_id = $1)
    AND ($2::timestamptz IS NULL OR data_timestamp >= $2)
    AND ($3::timestamptz IS NULL OR data_timestamp <= $3)
"""


def _counts(prefix: str) -> str:
    scope = {"all": "true", "alert": "tag = 'alert'", "other": "tag <> 'alert'"}[prefix]
    return f"""
    count(*) FILTER (WHERE {scope}) AS {prefix}_total,
    count(*) FILTER (WHERE {scope} AND evaluation_result IS NULL) AS {prefix}_pending,
    count(*) FILTER (WHERE {scope} AND evaluation_result = 'success') AS {prefix}_success,
    count(*) FILTER (WHERE {scope} AND evaluation_result = 'failed') AS {prefix}_failed,
    count(*) FILTER (WHERE {scope} AND evaluation_result = 'not_applicable') AS {prefix}_na,
    """


# GROUPING SETS give every model's row and the total row from one scan.
_STATISTICS_SQL = f"""
SELECT active_model_id, GROUPING(active_model_id) = 1 AS is_total,
    {_counts("all")}
    {_counts("alert")}
    {_counts("other")}
    count(*) FILTER (WHERE prediction = 1 AND evaluation_result = 'success') AS tp,
    count(*) FILTER (WHERE prediction = 1 AND evaluation_result = 'failed') AS fp,
    count(*) FILTER (WHERE prediction = 0 AND evaluation_result = 'success') AS tn,
    count(*) FILTER (WHERE prediction = 0 AND evaluation_result = 'failed') AS fn,
    count(actual_change_pct) FILTER (WHERE tag = 'alert'
        AND evaluation_result IN ('success', 'failed')) AS alert_changes,
    coalesce(sum(actual_change_pct) FILTER (WHERE tag = 'alert'
        AND evaluation_result IN ('success', 'failed') AND actual_change_pct > 0), 0)
        AS alert_profit,
    coalesce(sum(actual_change_pct) FILTER (WHERE tag = 'alert'
        AND evaluation_result IN ('success', 'failed') AND actual_change_pct < 0), 0)
        AS alert_loss,
    min(data_timestamp) AS first_ts,
    max(data_timestamp) AS last_ts
FROM predictions
WHERE {_FILTER}
GROUP BY GROUPING SETS ((active_model_id), ())
"""

_MODELS_SQL = """
SELECT id, model_id, coalesce(custom_name, name) AS display_name, model_type, is_active,
       target_kind, target_variable, target_operator, target_value, future_minutes,
       price_change_percent, target_direction, training_metrics
FROM active_models
WHERE id = ANY($1::bigint[])
ORDER BY id
"""

_SUMMARIES_SQL = """
SELECT active_model_id,
       count(*) AS predictions,
       max(predicted_at) AS last_prediction_at,
       count(*) FILTER (WHERE evaluation_result IS NULL) AS pending,
       count(*) FILTER (WHERE evaluation_result = 'success') AS success,
       count(*) FILTER (WHERE evaluation_result = 'failed') AS failed
FROM predictions
WHERE active_model_id = ANY($1::bigint[])
GROUP BY active_model_id
"""


def _outcomes(r: asyncpg.Record | None, prefix: str) -> OutcomeCounts:
    if r is None:
        return OutcomeCounts(0, 0, 0, 0, 0)
    return OutcomeCounts(
        r[f"{prefix}_total"],
        r[f"{prefix}_pending"],
        r[f"{prefix}_success"],
        r[f"{prefix}_failed"],
        r[f"{prefix}_na"],
    )


def _live(r: asyncpg.Record | None) -> LiveStatistics:
    return LiveStatistics(
        overall=_outcomes(r, "all"),
        alerts=_outcomes(r, "alert"),
        non_alerts=_outcomes(r, "other"),
        confusion=ConfusionMatrix(
            r["tp"] if r else 0, r["fp"] if r else 0, r["tn"] if r else 0, r["fn"] if r else 0
        ),
        alert_changes=AlertChanges(
            r["alert_changes"] if r else 0,
            float(r["alert_profit"]) if r else 0.0,
            float(r["alert_loss"]) if r else 0.0,
        ),
        first_data_timestamp=r["first_ts"] if r else None,
        last_data_timestamp=r["last_ts"] if r else None,
    )


def _model_info(r: asyncpg.Record) -> ModelInfo:
    return ModelInfo(
        active_model_id=r["id"],
        model_id=r["model_id"],
        name=r["display_name"],
        model_type=r["model_type"],
        is_active=r["is_active"],
        target={
            "target_kind": r["target_kind"],
            "target_variable": r["target_variable"],
            "target_operator": r["target_operator"],
            "target_value": r["target_value"],
            "future_minutes": r["future_minutes"],
            "price_change_percent": r["price_change_percent"],
            "target_direction": r["target_direction"],
        },
        training_metrics=dict(r["training_metrics"] or {}),
    )


async def statistics(
    conn: asyncpg.Connection,
    *,
    active_model_id: int | None = None,
    date_from: datetime | None = None,
    date_to: datetime | None = None,
    include_models: list[int] | None = None,
) -> StatisticsReport:
    """Totals and a per-model breakdown of the predictions that match the filters.

    The breakdown lists the models with matching predictions plus `include_models`
    (so a model's own statistics exist even before it predicted anything).
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await conn.fetch(_STATISTICS_SQL, active_model_id, date_from, date_to)
        per_model = {r["active_model_id"]: r for r in rows if not r["is_total"]}
        ids = sorted(set(per_model) | set(include_models or ()))
        models = await conn.fetch(_MODELS_SQL, ids)
    total = next((r for r in rows if r["is_total"]), None)
    return StatisticsReport(
        totals=_live(total),
        models=[ModelStatistics(_model_info(m), _live(per_model.get(m["id"]))) for m in models],
    )


async def model_summaries(
    conn: asyncpg.Connection, active_model_ids: list[int]
) -> dict[int, ModelSummary]:
    """Predictions, last prediction time and live success rate of each model (every id
    asked for is in the answer, with zeros when it has no predictions)."""
    rows = await conn.fetch(_SUMMARIES_SQL, list(active_model_ids))
    found = {
        r["active_model_id"]: ModelSummary(
            r["active_model_id"],
            r["predictions"],
            r["last_prediction_at"],
            r["pending"],
            r["success"],
            r["failed"],
        )
        for r in rows
    }
    return {i: found.get(i, ModelSummary(i, 0, None, 0, 0, 0)) for i in active_model_ids}
