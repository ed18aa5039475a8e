"""Backtest: every recorded tick scored as the stream would have scored it, then judged.

The parts are the stream's own: features from `FeatureSpec.compute_shared`
(the engine the predictors use, over the coin's rows of the model's phases up
to each tick), probabilities and tags from `actors.scoring.model_runtime.score` and
`tag_for`, the phase and coin filters of the model's settings, and the
evaluator's outcome definition (`actors.backtest.outcomes`). Rows are
processed a group of coins at a time, so memory is bounded by the largest
group, not by the range.

One difference from the stream is deliberate: the stream predicts a coin's
newest row of each batch (older rows of the same batch are coalesced away);
a backtest scores every row. One is not: for a model with phases, the stream
filters the phases inside its last FEATURE_HISTORY_SIZE rows (running features
come from the prefix state of all the model's phase rows), the backtest over
all the coin's rows; windowed features can differ only for a coin that left
the model's phases for longer than that window and came back.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl

from actors.backtest.outcomes import FAILED, PENDING, SUCCESS, OutcomeTarget, outcomes
from actors.runtime.messages import Tick
from actors.scoring.model_runtime import ModelRuntime, Scored, build_runtime, score
from actors.scoring.prefix_cache import phase_rows
from actors.webhooks.payload import TAG_ALERT, TAG_NEGATIVE, TAG_POSITIVE
from features import outcome_curves
from features.matrix import FeatureSpec, TickRows
from storage.backtests.store import TICK_COLUMNS
from storage.models.model_import import CheckedModel

DEFAULT_ALERT_THRESHOLD = 0.7
THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
# Rows handed to the feature engine at once: bounds memory (a computed row is ~1.5 kB).
CHUNK_ROWS = 50_000
# What `score` reads besides the features: the close and market cap at the tick.
SNAPSHOT_COLUMNS = ("price_close", "market_cap_close")

Progress = Callable[[int], None]  # ticks just processed


@dataclass(frozen=True, slots=True)
class BacktestModel:
    """A model as a backtest runs it: the stream's runtime plus its filters and target."""

    model_id: int
    runtime: ModelRuntime
    target: OutcomeTarget
    whitelist: frozenset[str] | None

    @property
    def threshold(self) -> float:
        return float(self.runtime.row["alert_threshold"])

    @classmethod
    def from_checked(cls, checked: CheckedModel) -> BacktestModel:
        row = checked.row if checked.row is not None else _row_of(checked)
        runtime = build_runtime(row, checked.loaded)
        whitelist = (
            frozenset(row.get("coin_whitelist") or ())
            if row.get("coin_filter_mode") == "whitelist"
            else None
        )
        return cls(checked.model_id, runtime, target_of(row), whitelist)


def target_of(row: Mapping[str, Any]) -> OutcomeTarget:
    """The target definition a prediction of this model would store."""
    return OutcomeTarget(
        kind=str(row["target_kind"]),
        future_minutes=row["future_minutes"],
        price_change_percent=row["price_change_percent"],
        direction=row["target_direction"],
        variable=row["target_variable"],
        operator=row["target_operator"],
        value=row["target_value"],
    )


def _row_of(checked: CheckedModel) -> dict[str, Any]:
    """Settings of a model that is not imported: the defaults an import would give it."""
    info = checked.info
    assert info is not None
    return {
        "id": 0,
        "model_id": info.id,
        "name": info.name,
        "custom_name": None,
        "model_type": info.model_type,
        "target_kind": info.target_kind,
        "target_variable": info.target_variable,
        "target_operator": info.target_operator,
        "target_value": info.target_value,
        "future_minutes": info.future_minutes,
        "price_change_percent": info.price_change_percent,
        "target_direction": info.target_direction,
        "features": list(checked.features),
        "phases": None if info.phases is None else list(info.phases),
        "params": info.params,
        "alert_threshold": DEFAULT_ALERT_THRESHOLD,
        "n8n_webhook_url": None,
        "n8n_enabled": False,
        "n8n_send_modes": [],
        "coin_filter_mode": "all",
        "coin_whitelist": [],
    }


@dataclass(slots=True)
class ModelRun:
    """One model's scored ticks (TICK_COLUMNS plus `came_true`) and skipped ticks."""

    model: BacktestModel
    parts: list[pl.DataFrame] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    def ticks(self) -> pl.DataFrame:
        """All scored ticks. The parts are joined without copying (no rechunk) and kept
        joined: the results are the largest thing a long backtest holds (~120 B per tick),
        and a copy per call would double them."""
        if not self.parts:
            return _empty_ticks()
        if len(self.parts) > 1:
            self.parts = [pl.concat(self.parts, how="vertical", rechunk=False)]
        return self.parts[0]


def _empty_ticks() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "mint": pl.String(),
            "timestamp": pl.Datetime("us", "UTC"),
            "probability": pl.Float64(),
            "prediction": pl.Int64(),
            "tag": pl.String(),
            "outcome": pl.String(),
            "actual_change_pct": pl.Float64(),
            "max_gain_pct": pl.Float64(),
            "max_drawdown_pct": pl.Float64(),
            "came_true": pl.Boolean(),
        }
    )


def coin_chunks(rows: pl.DataFrame, max_rows: int = CHUNK_ROWS) -> Iterator[pl.DataFrame]:
    """Whole coins in mint order, in groups of about `max_rows` rows (a coin is never
    split); each coin's rows in their order in `rows`.

    Only the row numbers are grouped and each chunk is gathered from `rows`: sorting
    or filtering the whole frame per chunk would copy it (a recording of 10 million
    rows is several GB) or scan it once per chunk.
    """
    if rows.is_empty():
        return
    groups = (
        rows.select("mint", pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"))
        .group_by("mint")
        .agg("_row")
        .sort("mint")
    )
    flat = groups["_row"].explode().to_numpy()
    ends = np.cumsum(groups["_row"].list.len().to_numpy())
    begin = 0
    for i, end in enumerate(ends.tolist()):
        if end - begin >= max_rows or i == len(ends) - 1:
            yield rows[flat[begin:end]]
            begin = end


@dataclass(slots=True)
class _TickSet:
    """The ticks of models with the same phases and coin filter, and what they share:
    the feature-row positions per feature key and the outcomes per target."""

    ticks: list[Tick]
    frame: pl.DataFrame  # mint, timestamp of each tick, in the ticks' order
    not_whitelisted: int
    positions: dict[tuple[Any, str], np.ndarray] = field(default_factory=dict)
    judged: dict[OutcomeTarget, pl.DataFrame] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        own: pl.DataFrame,
        start: datetime | None,
        end: datetime | None,
        whitelist: frozenset[str] | None,
    ) -> _TickSet:
        skipped: Counter[str] = Counter()
        ticks = _ticks_in_range(own, start, end, whitelist, skipped)
        frame = pl.DataFrame(
            {
                "mint": [t.coin_id for t in ticks],
                "timestamp": [t.data_timestamp for t in ticks],
            },
            schema={"mint": pl.String(), "timestamp": pl.Datetime("us", "UTC")},
        )
        return cls(ticks, frame, skipped["not_whitelisted"])

    def kept(self, scored: Scored) -> np.ndarray | None:
        """Indices of the scored ticks (None: all of them); `score` keeps the ticks' order."""
        if len(scored.ticks) == len(self.ticks):
            return None
        dropped = {id(t) for t, _ in scored.skipped}
        return np.fromiter(
            (i for i, t in enumerate(self.ticks) if id(t) not in dropped), dtype=np.int64
        )


def score_chunk(
    runs: Sequence[ModelRun],
    rows: pl.DataFrame,
    *,
    start: datetime | None,
    end: datetime | None,
    evaluable_until: datetime,
) -> None:
    """Score and judge the ticks of one group of whole coins for every model. Blocking.

    `rows`: every row of these coins (all phases) up to the end of the last
    tick's outcome window, in coin_metrics id order within a coin.

    Only the inference is per model. Models with the same feature key and phases
    share one feature computation; models with the same phases and coin filter
    share their ticks and the ticks' feature rows; those that also share a target
    share the outcome windows (only success/failed depends on the model).
    """
    rows = rows.sort(["mint", "timestamp"], maintain_order=True)
    computed: dict[tuple[Any, str], TickRows] = {}
    # Only the columns some of the models read are turned into the matrix (the shared
    # frame is wide).
    wanted: dict[tuple[Any, str], set[str]] = {}
    for run in runs:
        rt = run.model.runtime
        wanted.setdefault((rt.spec.shared_key, rt.phase_key), set(SNAPSHOT_COLUMNS)).update(
            rt.spec.features
        )
    phase_frames: dict[str, pl.DataFrame] = {}
    tick_sets: dict[tuple[str, frozenset[str] | None], _TickSet] = {}
    for run in runs:
        model = run.model
        runtime = model.runtime
        if runtime.phase_key not in phase_frames:
            phase_frames[runtime.phase_key] = phase_rows(rows, runtime.phase_key)
        own = phase_frames[runtime.phase_key]
        key = (runtime.spec.shared_key, runtime.phase_key)
        if key not in computed:
            frame = features_as_of_each_row(runtime.spec, own)
            columns = [c for c in frame.columns if c in wanted[key]]
            computed[key] = TickRows.from_frame(frame.select("mint", "timestamp", *columns))
        set_key = (runtime.phase_key, model.whitelist)
        if set_key not in tick_sets:
            tick_sets[set_key] = _TickSet.of(own, start, end, model.whitelist)
        tick_set = tick_sets[set_key]
        if tick_set.not_whitelisted:
            run.skipped["not_whitelisted"] += tick_set.not_whitelisted
        if not tick_set.ticks:
            continue
        if key not in tick_set.positions:
            keys = [(t.coin_id, t.data_timestamp) for t in tick_set.ticks]
            tick_set.positions[key] = computed[key].positions(keys)
        scored = score(runtime, tick_set.ticks, computed[key], tick_set.positions[key])
        run.skipped.update(reason for _, reason in scored.skipped)
        if not scored.ticks:
            continue
        if model.target not in tick_set.judged:
            tick_set.judged[model.target] = outcomes(
                rows,
                tick_set.frame.with_columns(pl.lit(0, pl.Int64).alias("prediction")),
                model.target,
                evaluable_until,
            )
        judged = tick_set.judged[model.target]
        kept = tick_set.kept(scored)
        if kept is not None:
            judged = judged[kept]
        run.parts.append(_model_ticks(judged, scored.probabilities, model.threshold))


def _model_ticks(judged: pl.DataFrame, probabilities: np.ndarray, threshold: float) -> pl.DataFrame:
    """One model's ticks: its probabilities, prediction, tag (CONTRACTS.md section 3, as
    `tag_for`: alert first) and its outcome from the shared outcome columns."""
    p = pl.col("probability")
    predicted = pl.col("prediction") == 1
    came_true = pl.col("came_true")
    return (
        judged.with_columns(pl.Series("probability", probabilities, pl.Float64))
        .with_columns(
            (p >= 0.5).cast(pl.Int64).alias("prediction"),
            pl.when(p >= threshold)
            .then(pl.lit(TAG_ALERT))
            .when(p >= 0.5)
            .then(pl.lit(TAG_POSITIVE))
            .otherwise(pl.lit(TAG_NEGATIVE))
            .alias("tag"),
        )
        .with_columns(
            # Judged ticks (came_true known) succeed when the prediction equals it.
            pl.when(came_true.is_null())
            .then(pl.col("outcome"))
            .when(predicted == came_true)
            .then(pl.lit(SUCCESS))
            .otherwise(pl.lit(FAILED))
            .alias("outcome")
        )
        .select([*TICK_COLUMNS, "came_true"])
    )


def features_as_of_each_row(spec: FeatureSpec, own: pl.DataFrame) -> pl.DataFrame:
    """Each row's features as the stream computes them at that row, from whole coins.

    The engine is causal but for one term the Training Service defines over the
    loaded frame: `minutes_since_ath` counts from the coin's first row when the
    frame holds no ATH breakout at all, else from the latest breakout (NULL, so
    0, before the first one). Over a whole history, rows before a coin's first
    breakout would see that later breakout; as of those rows there was none. So
    they are computed again from the rows before the first breakout alone. From
    the first breakout on, the whole-history frame is what the stream computes.
    No prefix state is needed: every coin starts at its first row.
    """
    computed = spec.compute_shared(own)
    if "ath_breakout" not in computed.columns:
        return computed
    first = (
        computed.filter(pl.col("ath_breakout") == 1)
        .group_by("mint")
        .agg(pl.col("timestamp").min().alias("_first_breakout"))
    )
    before = (
        own.join(first, on="mint")
        .filter(pl.col("timestamp") < pl.col("_first_breakout"))
        .drop("_first_breakout")
    )
    if before.is_empty():
        return computed
    after = (
        computed.join(first, on="mint", how="left")
        .filter(
            pl.col("_first_breakout").is_null() | (pl.col("timestamp") >= pl.col("_first_breakout"))
        )
        .drop("_first_breakout")
    )
    early = spec.compute_shared(before).select(after.columns)
    return pl.concat([early, after], how="vertical_relaxed").sort(
        ["mint", "timestamp"], maintain_order=True
    )


def _ticks_in_range(
    own: pl.DataFrame,
    start: datetime | None,
    end: datetime | None,
    whitelist: frozenset[str] | None,
    skipped: Counter[str],
) -> list[Tick]:
    """The model's ticks: its phase rows in [start, end], one per (mint, timestamp)."""
    frame = own
    if start is not None:
        frame = frame.filter(pl.col("timestamp") >= start)
    if end is not None:
        frame = frame.filter(pl.col("timestamp") <= end)
    frame = frame.unique(["mint", "timestamp"], keep="last", maintain_order=True)
    if whitelist is not None:
        kept = frame.filter(pl.col("mint").is_in(list(whitelist)))
        skipped["not_whitelisted"] += frame.height - kept.height
        frame = kept
    phases = frame["phase_id_at_time"].to_list()
    return [
        Tick(0, mint, ts, phase, 0.0)
        for mint, ts, phase in zip(
            frame["mint"].to_list(), frame["timestamp"].to_list(), phases, strict=True
        )
    ]


# --------------------------------------------------------------------------- summary


def _hours(ticks: pl.DataFrame, start: datetime | None, end: datetime | None) -> float:
    """The hours the backtest covers: the requested range, else the ticks' span."""
    first = start if start is not None else ticks["timestamp"].min()
    last = end if end is not None else ticks["timestamp"].max()
    if not isinstance(first, datetime) or not isinstance(last, datetime):
        return 0.0
    return max((last - first).total_seconds() / 3600.0, 0.0)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _f1(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None or precision + recall == 0:
        return None
    return 2 * precision * recall / (precision + recall)


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def threshold_rows(
    ticks: pl.DataFrame, hours: float, thresholds: Sequence[float] = THRESHOLDS
) -> list[dict[str, Any]]:
    """Per threshold: alerts, precision (of judged alerts), mean change after alert, per hour."""
    probability = ticks["probability"].to_numpy()
    came = ticks["came_true"]
    judged = came.is_not_null().to_numpy()
    came_true = came.fill_null(False).to_numpy()
    change = ticks["actual_change_pct"].to_numpy(allow_copy=True).astype(np.float64)
    table = []
    for t in thresholds:
        alert = probability >= t
        alerts = int(alert.sum())
        judged_alerts = int((alert & judged).sum())
        hits = int((alert & came_true).sum())
        changes = change[alert & ~np.isnan(change)]
        table.append(
            {
                "threshold": t,
                "alerts": alerts,
                "precision": _ratio(hits, judged_alerts),
                "mean_change_pct": _finite(changes.mean()) if changes.size else None,
                "alerts_per_hour": alerts / hours if hours > 0 else None,
            }
        )
    return table


def summarize(
    run: ModelRun,
    *,
    start: datetime | None,
    end: datetime | None,
    seconds: float,
) -> dict[str, Any]:
    """The summary of one model's backtest (the CLI's output, the API's result)."""
    ticks = run.ticks()
    model = run.model
    threshold = model.threshold
    came = ticks["came_true"]
    judged = came.is_not_null().to_numpy()
    came_true = came.fill_null(False).to_numpy()
    alert = ticks["probability"].to_numpy() >= threshold
    hits = int((alert & came_true).sum())
    precision = _ratio(hits, int((alert & judged).sum()))
    recall = _ratio(hits, int(came_true.sum()))
    outcome_counts = dict(ticks["outcome"].value_counts().iter_rows()) if ticks.height else {}
    hours = _hours(ticks, start, end)
    return {
        "model_id": model.model_id,
        "active_model_id": model.runtime.active_model_id or None,
        "name": model.runtime.name,
        "alert_threshold": threshold,
        "from": start.isoformat() if start else None,
        "to": end.isoformat() if end else None,
        "ticks": ticks.height,
        "coins": ticks["mint"].n_unique() if ticks.height else 0,
        "alerts": int(alert.sum()),
        "evaluated": int(judged.sum()),
        "pending": int(outcome_counts.get(PENDING, 0)),
        "outcomes": {str(k): int(v) for k, v in outcome_counts.items()},
        "precision": precision,
        "recall": recall,
        "f1": _f1(precision, recall),
        "thresholds": threshold_rows(ticks, hours),
        # The same precision/recall curve and reliability diagram as a model's live
        # statistics (thresholds from outcomes), here from the backtest's judged ticks.
        "threshold_curve": outcome_curves.report_judged(
            ticks["probability"].to_numpy()[judged], came_true[judged]
        ),
        "skipped": dict(run.skipped),
        "seconds": round(seconds, 3),
    }


class Stopwatch:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started
