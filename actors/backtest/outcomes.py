"""The evaluator's outcome definition, for every tick of a backtest at once.

`storage.predictions.evaluations` evaluates stored predictions in SQL against the
`coin_metrics` table; a backtest has neither (its rows may come from a
recording). This module applies the same definitions to a frame of rows, and
the backtest's equality test holds the two to the same results:

- row at T: the coin's row at exactly T (the last of equal timestamps, as the
  highest id wins in SQL); close at T is its price_close.
- close as of D (D = T + future_minutes for time-based targets, T for classic):
  price_close of the latest row at or before D that has one.
- change % = (close as of D - close at T) / close at T * 100 when close at T > 0.
- came true: change >= +pct (up), <= -pct (down); classic: `variable op value`
  on the row at T. The SQL compares in numeric: a change within float rounding
  of the threshold is decided again with exact decimals, so an exact +10 %
  reaches a 10 % threshold here too.
- max gain / drawdown: highest coalesce(price_high, price_close) and lowest
  coalesce(price_low, price_close) inside (T, D], relative to close at T.
- outcome: `pending` while D is after `evaluable_until` (the evaluator would
  not have judged it yet), `not_applicable` with a reason, else `success`
  when the prediction (p >= 0.5) equals came-true, `failed` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import numpy as np
import polars as pl

from features.columns import NUMERIC_BASE_COLUMNS
from storage.predictions.evaluations import (
    REASON_CHANGE_OUT_OF_RANGE,
    REASON_INCOMPLETE_CLASSIC_TARGET,
    REASON_INCOMPLETE_TIME_TARGET,
    REASON_NO_PRICE_AT_T,
    REASON_PRICE_AT_D_OUT_OF_RANGE,
    REASON_PRICE_AT_T_OUT_OF_RANGE,
    REASON_TARGET_OUT_OF_RANGE,
    REASON_UNKNOWN_VARIABLE,
    REASON_VARIABLE_NULL,
    REASON_VARIABLE_OUT_OF_RANGE,
)

PENDING = "pending"
NOT_APPLICABLE = "not_applicable"
SUCCESS = "success"
FAILED = "failed"
REASON_NOT_EVALUABLE = "target could not be evaluated"
REASON_NOT_DUE = "the outcome window ends after the data"

_CLASSIC_VARIABLES = frozenset(n for n in NUMERIC_BASE_COLUMNS if n != "id")
_MINUTE_US = 60_000_000
# Changes this close to the threshold are decided again with exact decimals.
_BOUNDARY = 1e-6


@dataclass(frozen=True, slots=True)
class OutcomeTarget:
    """A model's target definition, as stored with each of its predictions."""

    kind: str  # time_based | classic
    future_minutes: int | None
    price_change_percent: float | None
    direction: str | None
    variable: str | None
    operator: str | None
    value: float | None

    @property
    def window_us(self) -> int:
        """How long after T the outcome is known (0: classic, judged on the row at T)."""
        if self.kind == "time_based" and self.future_minutes:
            return int(self.future_minutes) * _MINUTE_US
        return 0

    @property
    def problem(self) -> str | None:
        """Why no tick of this target can be evaluated (the SQL's per-row reasons)."""
        if self.kind == "time_based":
            if self.direction is None or self.price_change_percent is None:
                return REASON_INCOMPLETE_TIME_TARGET
            return None
        if self.operator is None or self.value is None:
            return REASON_INCOMPLETE_CLASSIC_TARGET
        if self.variable is None or self.variable not in _CLASSIC_VARIABLES:
            return REASON_UNKNOWN_VARIABLE
        return None


def _last_per_key(rows: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """One row per (mint, timestamp): the last one, as the highest id wins in SQL."""
    return rows.select(["mint", "timestamp", *columns]).unique(
        ["mint", "timestamp"], keep="last", maintain_order=True
    )


def _window_extremes(rows: pl.DataFrame, window_us: int) -> pl.DataFrame:
    """Per (mint, timestamp): the highest high and lowest low in (T, T + window]."""
    if window_us <= 0:
        return (
            rows.select("mint", "timestamp")
            .unique(["mint", "timestamp"])
            .with_columns(
                pl.lit(None, pl.Float64).alias("max_price"),
                pl.lit(None, pl.Float64).alias("min_price"),
            )
        )
    # A forward window is a backward one on the reversed time axis: (T, T+N] on t is
    # [-T-N, -T) on -t, which Polars' rolling "left-closed" windows compute per coin.
    reversed_rows = rows.select(
        "mint",
        "timestamp",
        # coalesce(high, close) in SQL terms; a row whose value a double cannot
        # hold (NULL here with its flag set) is skipped, as in the SQL.
        _extreme("price_high", "_high_oor").alias("high"),
        _extreme("price_low", "_low_oor").alias("low"),
        (-pl.col("timestamp").dt.epoch("us")).alias("_back"),
    ).sort(["mint", "_back"], maintain_order=True)
    size = f"{window_us}i"
    return (
        reversed_rows.with_columns(
            pl.col("high")
            .rolling_max_by("_back", window_size=size, closed="left")
            .over("mint")
            .alias("max_price"),
            pl.col("low")
            .rolling_min_by("_back", window_size=size, closed="left")
            .over("mint")
            .alias("min_price"),
        )
        .unique(["mint", "timestamp"], keep="first")
        .select("mint", "timestamp", "max_price", "min_price")
    )


def _with_range_flags(rows: pl.DataFrame) -> pl.DataFrame:
    """`_close_oor`, `_high_oor`, `_low_oor`: a price that is there but no double holds.

    Rows from the database carry them (storage.backtests.rows, which reads such prices
    as NULL); for other frames a non-finite value is such a price, and becomes NULL.
    """
    names = {"price_close": "_close_oor", "price_high": "_high_oor", "price_low": "_low_oor"}
    missing = {c: f for c, f in names.items() if f not in rows.columns}
    if not missing:
        return rows
    return rows.with_columns(
        *(_out_of_range(c).alias(f) for c, f in missing.items()),
        *(_finite(c).alias(c) for c in missing),
    )


def _extreme(column: str, flag: str) -> pl.Expr:
    return (
        pl.when(pl.col(flag))
        .then(None)
        .when(pl.col(column).is_not_null())
        .then(pl.col(column))
        .when(pl.col("_close_oor"))
        .then(None)
        .otherwise(pl.col("price_close"))
    )


def _finite(column: str) -> pl.Expr:
    """The column where it is a finite number, else NULL."""
    return pl.when(pl.col(column).is_finite()).then(pl.col(column))


def _out_of_range(column: str) -> pl.Expr:
    """A value is there but is NaN or infinite (NULL is not out of range: it is missing)."""
    return (pl.col(column).is_not_null() & ~pl.col(column).is_finite()).fill_null(False)


def _exact_change_reaches(close_t: float, close_d: float, pct: float, direction: str) -> bool:
    """change >= pct (up) / change <= -pct (down), in decimals as the SQL's numeric does."""
    t, d, p = Decimal(repr(close_t)), Decimal(repr(close_d)), Decimal(repr(pct))
    scaled = (d - t) * 100  # change * close_t, and close_t > 0
    return scaled >= p * t if direction == "up" else scaled <= -p * t


def _came_true(frame: pl.DataFrame, target: OutcomeTarget) -> np.ndarray:
    """1.0 / 0.0 / NaN (not judged) per tick."""
    n = frame.height
    result = np.full(n, np.nan)
    if target.problem is not None:
        return result
    if target.kind == "time_based":
        assert target.price_change_percent is not None
        pct = float(target.price_change_percent)
        change = frame["actual_change_pct"].to_numpy(allow_copy=True).astype(np.float64)
        known = ~np.isnan(change)
        up = target.direction == "up"
        if target.direction not in ("up", "down"):
            return result
        hit = change >= pct if up else change <= -pct
        result[known] = hit[known].astype(np.float64)
        near = np.flatnonzero(known & (np.abs(change - (pct if up else -pct)) < _BOUNDARY))
        if near.size:
            closes_t = frame["close_t"].to_numpy()
            closes_d = frame["close_d"].to_numpy()
            for i in near.tolist():
                reached = _exact_change_reaches(
                    float(closes_t[i]), float(closes_d[i]), pct, str(target.direction)
                )
                result[i] = 1.0 if reached else 0.0
        return result
    assert target.value is not None
    values = frame["variable_value"].to_numpy(allow_copy=True).astype(np.float64)
    known = np.isfinite(values)
    if not np.isfinite(float(target.value)):
        return result
    # Float comparisons order exactly as the decimals they print as, so these match numeric.
    compare = {
        ">": np.greater,
        "<": np.less,
        ">=": np.greater_equal,
        "<=": np.less_equal,
        "=": np.equal,
    }.get(str(target.operator))
    if compare is None:
        return result
    result[known] = compare(values[known], float(target.value)).astype(np.float64)
    return result


def outcomes(
    rows: pl.DataFrame,
    ticks: pl.DataFrame,
    target: OutcomeTarget,
    evaluable_until: datetime,
) -> pl.DataFrame:
    """The outcome of each tick (`mint`, `timestamp`, `prediction`), in the ticks' order.

    `rows` holds every row of the ticks' coins (all phases, in id order) up to at
    least the end of each tick's window. Adds `outcome`, `reason`, `came_true`
    (true/false/null), `actual_change_pct`, `max_gain_pct`, `max_drawdown_pct`.
    """
    rows = _with_range_flags(rows)
    variable = target.variable if target.kind == "classic" and target.problem is None else None
    at_t = _last_per_key(
        rows, ["price_close", "_close_oor", *([variable] if variable else [])]
    ).rename(
        {
            "price_close": "close_t",
            "_close_oor": "close_t_oor",
            **({variable: "variable_value"} if variable else {}),
        }
    )
    if variable is None:
        at_t = at_t.with_columns(pl.lit(None, pl.Float64).alias("variable_value"))
    window_us = target.window_us
    frame = (
        ticks.with_row_index("_order")
        .join(at_t, on=["mint", "timestamp"], how="left")
        .with_columns((pl.col("timestamp").dt.epoch("us") + window_us).alias("_due_us"))
    )
    closes = (
        # "Has a price" in SQL terms: out-of-range prices count (and judge nothing).
        _last_per_key(
            rows.filter(pl.col("price_close").is_not_null() | pl.col("_close_oor")),
            ["price_close", "_close_oor"],
        )
        .select(
            "mint",
            pl.col("timestamp").dt.epoch("us").alias("_close_us"),
            pl.col("price_close").alias("close_d"),
            pl.col("_close_oor").alias("close_d_oor"),
        )
        .sort("_close_us")
    )
    frame = frame.sort("_due_us").join_asof(
        closes,
        left_on="_due_us",
        right_on="_close_us",
        by="mint",
        strategy="backward",
        check_sortedness=False,  # both sides are sorted on the time key above
    )
    frame = frame.join(_window_extremes(rows, window_us), on=["mint", "timestamp"], how="left")
    # A value a double cannot hold is missing for the SQL (NaN, +-Infinity, 1e1000 are
    # valid numerics there); in a float frame those are the non-finite values.
    close_t, close_d = _finite("close_t"), _finite("close_d")
    positive = close_t > 0
    raw_change = (close_d - close_t) / close_t * 100
    frame = (
        frame.sort("_order")
        .with_columns(
            pl.when(positive).then(raw_change).alias("_raw_change"),
            pl.when(positive)
            .then((pl.col("max_price") - close_t) / close_t * 100)
            .alias("max_gain_pct"),
            pl.when(positive)
            .then((pl.col("min_price") - close_t) / close_t * 100)
            .alias("max_drawdown_pct"),
        )
        .with_columns(_finite("_raw_change").alias("actual_change_pct"))
    )
    came_true = _came_true(frame, target)
    reason = _reasons(frame, target)
    due_us = frame["_due_us"].to_numpy()
    pending = due_us > int(pl.Series([evaluable_until]).dt.epoch("us")[0])
    predicted = frame["prediction"].to_numpy()
    judged = ~np.isnan(came_true)
    outcome = np.where(
        pending,
        PENDING,
        np.where(
            reason != None,  # noqa: E711 (element-wise on an object array)
            NOT_APPLICABLE,
            np.where(
                ~judged,
                NOT_APPLICABLE,
                np.where((predicted == 1) == (came_true == 1.0), SUCCESS, FAILED),
            ),
        ),
    )
    reason = np.where(
        pending,
        REASON_NOT_DUE,
        np.where((reason == None) & ~judged, REASON_NOT_EVALUABLE, reason),  # noqa: E711
    )
    came = np.where(pending | (outcome == NOT_APPLICABLE), np.nan, came_true)
    return frame.select(
        [*ticks.columns, "actual_change_pct", "max_gain_pct", "max_drawdown_pct"]
    ).with_columns(
        pl.Series("outcome", outcome.tolist(), pl.String),
        pl.Series("reason", reason.tolist(), pl.String),
        # NaN (not judged) must become NULL: cast as a NaN it would read as true.
        pl.Series("came_true", came, pl.Float64, nan_to_null=True).cast(pl.Boolean),
    )


def _reasons(frame: pl.DataFrame, target: OutcomeTarget) -> np.ndarray:
    """The SQL's per-row not_applicable reasons, in its order (None: the tick is judged)."""
    n = frame.height
    numbers = [target.value, target.price_change_percent]
    if any(v is not None and not np.isfinite(float(v)) for v in numbers):
        return np.full(n, REASON_TARGET_OUT_OF_RANGE, dtype=object)
    reasons = np.full(n, None, dtype=object)
    flags = frame.select(
        pl.col("close_t_oor").fill_null(False).alias("t_oor"),
        (~(_finite("close_t") > 0)).fill_null(True).alias("no_price"),
        pl.col("close_d_oor").fill_null(False).alias("d_oor"),
        _out_of_range("_raw_change").alias("change_oor"),
        _out_of_range("variable_value").alias("var_oor"),
        pl.col("variable_value").is_null().alias("var_null"),
    )

    def first(mask: np.ndarray, reason: str) -> None:
        reasons[mask & (reasons == None)] = reason  # noqa: E711 (element-wise)

    if target.kind == "time_based":
        first(flags["t_oor"].to_numpy(), REASON_PRICE_AT_T_OUT_OF_RANGE)
        first(flags["no_price"].to_numpy(), REASON_NO_PRICE_AT_T)
        first(flags["d_oor"].to_numpy(), REASON_PRICE_AT_D_OUT_OF_RANGE)
        first(flags["change_oor"].to_numpy(), REASON_CHANGE_OUT_OF_RANGE)
        if target.problem is not None:
            first(np.ones(n, dtype=bool), target.problem)
        return reasons
    if target.problem is not None:
        return np.full(n, target.problem, dtype=object)
    first(flags["var_oor"].to_numpy(), REASON_VARIABLE_OUT_OF_RANGE)
    first(flags["var_null"].to_numpy(), REASON_VARIABLE_NULL)
    return reasons
