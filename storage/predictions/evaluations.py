"""Evaluation of due predictions: did each one come true? (CONTRACTS.md section 2)

One set-based statement per page: it picks the oldest due, pending predictions
(`FOR UPDATE SKIP LOCKED`, so two evaluators never take the same rows), looks
up their prices with LATERAL index reads on coin_metrics (mint, timestamp) and
writes every outcome in one UPDATE. The target definition comes from the
prediction row itself, so a later change of the model never rewrites history,
and the model's active flag is not consulted (deactivated models' predictions
are evaluated too; deleted models cascade-delete theirs).

Definitions (T = data_timestamp, D = evaluation_due_at = T + future_minutes for
time-based targets, = T for classic ones):

- row at T: the coin_metrics row of the coin at exactly T (highest id wins).
  Missing -> `not_applicable` with a reason; nothing else can be said.
- close as of D: price_close of the latest row at or before D that has a
  price (rows are written only when the coin trades, so the last trade price
  holds). It is at least the row at T, so "no trade after T" means change 0.
- actual change % = (close as of D - close at T) / close at T * 100, computed
  in numeric so that an exact +10 % reaches a 10 % threshold (float rounding
  would sometimes give 9.999...).
- time-based came true: change >= +pct (up) or change <= -pct (down).
- classic came true: `<target_variable> <op> <target_value>` on the row at T.
  The variable is matched against the coin_metrics column catalogue; the CASE
  below is generated from that catalogue, never from the row's text.
- success: the prediction (0/1) equals whether it came true; else failed.
- max gain / max drawdown: highest `price_high` and lowest `price_low` inside
  (T, D] relative to close at T, with the earliest time each was reached.
  High/low rather than close because a take-profit or stop order fills on the
  intra-row extreme; a row without high/low falls back to its close. NULL when
  nothing traded in the window. The gain can be negative (never rose above the
  price at T) and the drawdown positive (never fell below it): they are the
  extremes, not clipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from features.columns import NUMERIC_BASE_COLUMNS, quote_ident

REASON_NO_ROW_AT_T = "no coin_metrics row for this coin at the prediction timestamp"
REASON_NO_PRICE_AT_T = "price_close at the prediction timestamp is NULL or 0"
REASON_INCOMPLETE_TIME_TARGET = "time-based target without direction or price_change_percent"
REASON_UNKNOWN_VARIABLE = "target_variable is not a numeric coin_metrics column"
REASON_INCOMPLETE_CLASSIC_TARGET = "classic target without operator or value"
REASON_VARIABLE_NULL = "target_variable is NULL on the row at the prediction timestamp"
REASON_PRICE_AT_T_OUT_OF_RANGE = (
    "price_close at the prediction timestamp is NaN, infinite or out of range for double precision"
)
REASON_PRICE_AT_D_OUT_OF_RANGE = (
    "price_close as of the evaluation time is NaN, infinite or out of range for double precision"
)
REASON_CHANGE_OUT_OF_RANGE = "the price change is out of range for double precision"
REASON_VARIABLE_OUT_OF_RANGE = (
    "target_variable on the row at the prediction timestamp is NaN, infinite or out of range"
    " for double precision"
)
REASON_TARGET_OUT_OF_RANGE = "the target's value or percent is NaN or infinite"


# tick_outcomes.state: the first reason a price path cannot judge a target (the view
# `prediction_rows` in migration 0017 turns it into the reason texts above).
STATE_NO_ROW_AT_T = 1
STATE_PRICE_AT_T_OUT_OF_RANGE = 2
STATE_NO_PRICE_AT_T = 3
STATE_PRICE_AT_D_OUT_OF_RANGE = 4
STATE_CHANGE_OUT_OF_RANGE = 5
STATE_UNKNOWN_VARIABLE = 6
STATE_VARIABLE_OUT_OF_RANGE = 7
STATE_VARIABLE_NULL = 8


def in_double(value: str) -> str:
    """SQL: is this numeric representable as a double precision (NULL stays NULL)?

    coin_metrics columns are plain numeric: NaN, +-Infinity and 1e1000 are valid
    there, but casting them (or a percentage computed from them) to float8 raises
    and aborts the whole page, and NaN compares greater than every number, so a NaN
    change would pass an "up" target. Such a value is treated as missing.
    """
    return (
        f"({value} = 0 OR abs({value}) BETWEEN 2.2250738585072014e-308 AND 1.7976931348623157e308)"
    )


def _double_or_null(value: str) -> str:
    return f"CASE WHEN {in_double(value)} THEN {value} END"


# Classic targets may name any numeric coin_metrics column but the row id.
_CLASSIC_VARIABLES = [name for name in NUMERIC_BASE_COLUMNS if name != "id"]
_TARGET_VALUE_CASE = "\n".join(
    [
        "CASE page.variable",
        *(f"    WHEN '{n}' THEN c.{quote_ident(n)}::numeric" for n in _CLASSIC_VARIABLES),
        "END",
    ]
)

_EVALUATE_SQL = f"""
WITH page AS (
    SELECT d.tick_id, d.horizon_s, d.variable, d.due_at AS evaluation_due_at,
           t.coin_id, t.data_timestamp
    FROM prediction_due d
    JOIN prediction_ticks t ON t.id = d.tick_id
    WHERE d.due_at <= now() - make_interval(secs => $1)
    ORDER BY d.due_at, d.tick_id
    LIMIT $2
    FOR UPDATE OF d SKIP LOCKED
),
done AS (
    DELETE FROM prediction_due d USING page
    WHERE (d.tick_id, d.horizon_s, d.variable) = (page.tick_id, page.horizon_s, page.variable)
),
measured AS (
    SELECT page.*,
           at_t.id IS NOT NULL AS has_row_at_t,
           at_t.close_t,
           at_t.variable_value,
           as_of.close_d,
           as_of.ts_d,
           hi.price AS max_price, hi.ts AS max_ts,
           lo.price AS min_price, lo.ts AS min_ts
    FROM page
    LEFT JOIN LATERAL (
        SELECT c.id, c.price_close::numeric AS close_t,
        {_TARGET_VALUE_CASE} AS variable_value
        FROM coin_metrics c
        WHERE c.mint = page.coin_id AND c."timestamp" = page.data_timestamp
        ORDER BY c.id DESC
        LIMIT 1
    ) at_t ON true
    LEFT JOIN LATERAL (
        SELECT c.price_close::numeric AS close_d, c."timestamp" AS ts_d
        FROM coin_metrics c
        WHERE c.mint = page.coin_id AND c."timestamp" <= page.evaluation_due_at
          AND c.price_close IS NOT NULL
        ORDER BY c."timestamp" DESC, c.id DESC
        LIMIT 1
    ) as_of ON true
    LEFT JOIN LATERAL (
        SELECT coalesce(c.price_high, c.price_close)::numeric AS price, c."timestamp" AS ts
        FROM coin_metrics c
        WHERE c.mint = page.coin_id
          AND c."timestamp" > page.data_timestamp AND c."timestamp" <= page.evaluation_due_at
          AND {in_double("coalesce(c.price_high, c.price_close)")}
        ORDER BY 1 DESC, c."timestamp", c.id
        LIMIT 1
    ) hi ON true
    LEFT JOIN LATERAL (
        SELECT coalesce(c.price_low, c.price_close)::numeric AS price, c."timestamp" AS ts
        FROM coin_metrics c
        WHERE c.mint = page.coin_id
          AND c."timestamp" > page.data_timestamp AND c."timestamp" <= page.evaluation_due_at
          AND {in_double("coalesce(c.price_low, c.price_close)")}
        ORDER BY 1, c."timestamp", c.id
        LIMIT 1
    ) lo ON true
),
bounded AS (
    SELECT m.*,
           coalesce(NOT {in_double("m.close_t")}, false) AS close_t_out_of_range,
           coalesce(NOT {in_double("m.close_d")}, false) AS close_d_out_of_range,
           coalesce(NOT {in_double("m.variable_value")}, false) AS variable_out_of_range,
           {_double_or_null("m.close_t")} AS close_t_ok,
           {_double_or_null("m.close_d")} AS close_d_ok
    FROM measured m
),
ratios AS (
    SELECT b.*,
           CASE WHEN b.close_t_ok > 0 THEN (b.close_d_ok - b.close_t_ok) / b.close_t_ok * 100 END
               AS change_raw,
           CASE WHEN b.close_t_ok > 0 THEN (b.max_price - b.close_t_ok) / b.close_t_ok * 100 END
               AS gain_raw,
           CASE WHEN b.close_t_ok > 0 THEN (b.min_price - b.close_t_ok) / b.close_t_ok * 100 END
               AS drawdown_raw
    FROM bounded b
),
changed AS (
    SELECT r.*,
           {_double_or_null("r.change_raw")} AS change_pct,
           {_double_or_null("r.gain_raw")} AS gain_pct,
           {_double_or_null("r.drawdown_raw")} AS drawdown_pct
    FROM ratios r
)
INSERT INTO tick_outcomes (tick_id, horizon_s, variable, state, price_close_at_eval,
    eval_price_timestamp, actual_change_pct, max_gain_pct, max_gain_at, max_drawdown_pct,
    max_drawdown_at, variable_value)
SELECT ch.tick_id, ch.horizon_s, ch.variable,
       CASE
           WHEN NOT ch.has_row_at_t THEN {STATE_NO_ROW_AT_T}
           WHEN ch.variable = '' AND ch.close_t_out_of_range THEN {STATE_PRICE_AT_T_OUT_OF_RANGE}
           WHEN ch.variable = '' AND NOT coalesce(ch.close_t > 0, false) THEN {STATE_NO_PRICE_AT_T}
           WHEN ch.variable = '' AND ch.close_d_out_of_range THEN {STATE_PRICE_AT_D_OUT_OF_RANGE}
           WHEN ch.variable = '' AND ch.change_raw IS NOT NULL AND ch.change_pct IS NULL
               THEN {STATE_CHANGE_OUT_OF_RANGE}
           WHEN ch.variable <> '' AND NOT ch.variable = ANY($3::text[])
               THEN {STATE_UNKNOWN_VARIABLE}
           WHEN ch.variable <> '' AND ch.variable_out_of_range THEN {STATE_VARIABLE_OUT_OF_RANGE}
           WHEN ch.variable <> '' AND ch.variable_value IS NULL THEN {STATE_VARIABLE_NULL}
           ELSE 0
       END,
       CASE WHEN ch.has_row_at_t THEN ch.close_d_ok::float8 END,
       CASE WHEN ch.has_row_at_t THEN ch.ts_d END,
       ch.change_pct::float8,
       ch.gain_pct::float8,
       CASE WHEN ch.gain_pct IS NOT NULL THEN ch.max_ts END,
       ch.drawdown_pct::float8,
       CASE WHEN ch.drawdown_pct IS NOT NULL THEN ch.min_ts END,
       CASE WHEN ch.variable <> '' AND NOT ch.variable_out_of_range THEN ch.variable_value END
FROM changed ch
ON CONFLICT DO NOTHING
RETURNING tick_id, horizon_s, variable
"""

# The predictions judged by the outcomes a page wrote, as the view derives them (run
# after the page's statement: its own snapshot does not see the new outcomes yet).
_JUDGED_SQL = """
SELECT r.id, r.active_model_id, r.evaluation_result
FROM unnest($1::bigint[], $2::int[], $3::text[]) AS w(tick_id, horizon_s, variable)
JOIN prediction_rows r
    ON r.tick_id = w.tick_id AND r.horizon_s = w.horizon_s AND r.outcome_variable = w.variable
"""

_MODEL_COUNTS_SQL = """
SELECT active_model_id,
       count(*) FILTER (WHERE evaluation_result IN ('success', 'failed')) AS evaluated,
       count(*) FILTER (WHERE evaluation_result = 'success') AS successes
FROM predictions
WHERE $1::bigint[] IS NULL OR active_model_id = ANY($1::bigint[])
GROUP BY active_model_id
"""

_LAG_SQL = """
SELECT coalesce(extract(epoch FROM now() - min(due_at)), 0)::float8
FROM prediction_due
WHERE due_at <= now()
"""


@dataclass(frozen=True, slots=True)
class EvaluatedPrediction:
    id: int
    active_model_id: int
    result: str  # success | failed | not_applicable


class EvaluatedPage(list[EvaluatedPrediction]):
    """The predictions a page's outcomes evaluated, and `outcomes`: how many price
    paths it judged (the page is full when that equals the limit)."""

    def __init__(self, outcomes: int, predictions: list[EvaluatedPrediction]) -> None:
        super().__init__(predictions)
        self.outcomes = outcomes


@dataclass(frozen=True, slots=True)
class ModelEvaluationCounts:
    active_model_id: int
    evaluated: int  # success + failed (not_applicable does not say anything about quality)
    successes: int

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.evaluated if self.evaluated else None


async def evaluate_due_page(
    conn: asyncpg.Connection, *, grace_seconds: float, limit: int
) -> EvaluatedPage:
    """Write the outcomes of up to `limit` of the oldest (tick, horizon) price paths
    due `grace_seconds` ago, one set-based statement for every horizon.

    Runs in its own transaction: either the whole page is written or none of it
    (and the paths stay queued for the next attempt).
    """
    async with conn.transaction():
        written = await conn.fetch(_EVALUATE_SQL, float(grace_seconds), limit, _CLASSIC_VARIABLES)
        rows = (
            await conn.fetch(
                _JUDGED_SQL,
                [w[0] for w in written],
                [w[1] for w in written],
                [w[2] for w in written],
            )
            if written
            else []
        )
    return EvaluatedPage(
        len(written),
        [EvaluatedPrediction(r["id"], r["active_model_id"], r["evaluation_result"]) for r in rows],
    )


async def model_evaluation_counts(
    conn: asyncpg.Connection, active_model_ids: list[int] | None = None
) -> list[ModelEvaluationCounts]:
    """Evaluated and successful predictions per model (all models when ids is None)."""
    rows = await conn.fetch(_MODEL_COUNTS_SQL, active_model_ids)
    return [
        ModelEvaluationCounts(r["active_model_id"], r["evaluated"], r["successes"]) for r in rows
    ]


async def evaluation_lag_seconds(conn: asyncpg.Connection) -> float:
    """Age of the oldest due, pending price path (0 when none is due)."""
    return float(await conn.fetchval(_LAG_SQL))


async def oldest_pending_due_at(conn: asyncpg.Connection) -> datetime | None:
    """When the next pending prediction falls due (None when nothing is pending)."""
    value: datetime | None = await conn.fetchval("SELECT min(due_at) FROM prediction_due")
    return value
