"""Thresholds from outcomes: what each alert threshold would have given, and calibration.

Pure functions over (probability, came true) pairs of judged predictions, live
or from a backtest. A prediction "came true" when its target was reached (the
evaluator's `success` of a 1, `failed` of a 0), whatever was predicted, so the
same pairs answer every threshold:

- curve: per threshold t (0.50 to 0.99 by 0.01), alerts (p >= t), precision
  (alerts that came true / alerts) and recall (came-true ticks alerted / all
  that came true);
- reliability: probability bins of 0.1, the mean probability against the
  observed rate of targets reached, with the count (a calibrated model lies on
  the diagonal);
- the lowest threshold whose precision reaches a wanted precision (None when
  no threshold does, or too few alerts remain to say).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

CURVE_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.01 * i, 2) for i in range(50))
BINS = 10
# Below this many alerts a precision says little; such thresholds are not recommended.
MIN_ALERTS = 10


def came_true(predictions: Sequence[int], results: Sequence[str | None]) -> list[bool | None]:
    """Whether each target was reached, from the evaluator's result (None: not judged)."""
    out: list[bool | None] = []
    for predicted, result in zip(predictions, results, strict=True):
        if result == "success":
            out.append(predicted == 1)
        elif result == "failed":
            out.append(predicted != 1)
        else:
            out.append(None)
    return out


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def curve(probability: np.ndarray, reached: np.ndarray) -> list[dict[str, Any]]:
    positives = int(reached.sum())
    rows = []
    for t in CURVE_THRESHOLDS:
        alert = probability >= t
        alerts = int(alert.sum())
        hits = int((alert & reached).sum())
        rows.append(
            {
                "threshold": t,
                "alerts": alerts,
                "precision": _ratio(hits, alerts),
                "recall": _ratio(hits, positives),
            }
        )
    return rows


def reliability(probability: np.ndarray, reached: np.ndarray) -> list[dict[str, Any]]:
    edges = np.arange(BINS + 1) / BINS  # 6 / 10 is 0.6; linspace gives 0.6000000000000001
    index = np.clip(np.digitize(probability, edges[1:-1]), 0, BINS - 1)
    rows = []
    for b in range(BINS):
        inside = index == b
        count = int(inside.sum())
        rows.append(
            {
                "bin_from": round(float(edges[b]), 2),
                "bin_to": round(float(edges[b + 1]), 2),
                "count": count,
                "mean_probability": float(probability[inside].mean()) if count else None,
                "observed_rate": float(reached[inside].mean()) if count else None,
            }
        )
    return rows


def lowest_threshold(rows: Sequence[dict[str, Any]], precision: float) -> float | None:
    for row in rows:
        if (
            row["alerts"] >= MIN_ALERTS
            and row["precision"] is not None
            and row["precision"] >= precision
        ):
            return float(row["threshold"])
    return None


def report(
    probabilities: Sequence[float],
    reached: Sequence[bool | None],
    *,
    target_precision: float | None = None,
) -> dict[str, Any]:
    """The thresholds block of a model's statistics (or a backtest's summary)."""
    judged = [(p, r) for p, r in zip(probabilities, reached, strict=True) if r is not None]
    probability = np.fromiter((p for p, _ in judged), dtype=np.float64, count=len(judged))
    hit = np.fromiter((bool(r) for _, r in judged), dtype=bool, count=len(judged))
    return report_judged(probability, hit, target_precision=target_precision)


def report_judged(
    probability: np.ndarray, hit: np.ndarray, *, target_precision: float | None = None
) -> dict[str, Any]:
    """`report` of judged ticks only, as arrays: a backtest of millions of ticks would
    otherwise build a Python object per tick (~70 B each at 10 million)."""
    rows = curve(probability, hit)
    result: dict[str, Any] = {
        "judged": len(probability),
        "curve": rows,
        "reliability": reliability(probability, hit),
        "min_alerts_for_recommendation": MIN_ALERTS,
    }
    if target_precision is not None:
        result["target_precision"] = target_precision
        result["lowest_threshold_for_target"] = lowest_threshold(rows, target_precision)
    return result


TickOutcome = tuple[str, int, str | None]  # tag, prediction, evaluation result


def _quality(outcomes: Sequence[TickOutcome]) -> dict[str, Any]:
    """Precision and recall at the model's own threshold (its `alert` tags), judged ticks."""
    reached = came_true([o[1] for o in outcomes], [o[2] for o in outcomes])
    judged = [(tag == "alert", hit) for (tag, _, _), hit in zip(outcomes, reached, strict=True)]
    judged = [(alert, hit) for alert, hit in judged if hit is not None]
    alerts = sum(1 for alert, _ in judged if alert)
    hits = sum(1 for alert, hit in judged if alert and hit)
    positives = sum(1 for _, hit in judged if hit)
    return {
        "judged": len(judged),
        "alerts": alerts,
        "precision": _ratio(hits, alerts),
        "recall": _ratio(hits, positives),
    }


def compare(a: dict[Any, TickOutcome], b: dict[Any, TickOutcome]) -> dict[str, Any]:
    """Two models on the ticks both predicted: each one's quality there, and agreement
    (both alerted, or neither did: the share of shared ticks where they agree)."""
    shared = sorted(set(a) & set(b))
    agree = sum(1 for k in shared if (a[k][0] == "alert") == (b[k][0] == "alert"))
    both = sum(1 for k in shared if a[k][0] == "alert" and b[k][0] == "alert")
    return {
        "shared_ticks": len(shared),
        "agreement": _ratio(agree, len(shared)),
        "both_alerted": both,
        "a": _quality([a[k] for k in shared]),
        "b": _quality([b[k] for k in shared]),
    }
