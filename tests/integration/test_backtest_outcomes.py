"""The backtest's outcomes equal the evaluator's on hand-built hard cases.

The evaluator judges stored predictions in SQL (numeric arithmetic, LATERAL
reads); the backtest judges a frame of rows (actors.backtest.outcomes). Both run
here on the same coin_metrics rows: an exact +10 % at pump.fun price scale, no
trade after T, a zero price, a NULL high, a duplicated timestamp, values a double
cannot hold (NaN, Infinity) and a prediction of 0.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import polars as pl
from prediction_rows import add_metric, add_model, add_prediction

from actors.backtest.engine import target_of
from actors.backtest.outcomes import outcomes
from actors.housekeeping.evaluator import Evaluator
from storage.backtests import rows as backtest_rows
from storage.models import active_models

M = timedelta(minutes=1)


async def test_backtest_outcomes_equal_the_evaluators_on_hard_cases(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        t0 = (await conn.fetchval("SELECT date_trunc('second', now())")) - timedelta(hours=2)
        model = await add_model(conn, 1)  # up 10 % within 5 minutes
        cases: list[tuple[str, int]] = []

        async def case(coin: str, prediction: int, *rows: tuple[timedelta, float | None]) -> None:
            for offset, close in rows:
                await add_metric(conn, coin, t0 + offset, close)
            cases.append((coin, prediction))

        await case("EDGE", 1, (0 * M, 0.00000003), (5 * M, 0.000000033))
        await case("NOTRADE", 1, (0 * M, 100.0))
        await case("ZERO", 1, (0 * M, 0.0), (1 * M, 5.0))
        await case("FLAT", 0, (0 * M, 100.0), (4 * M, 104.0), (6 * M, 300.0))
        await case("DUP", 1, (0 * M, 100.0), (0 * M, 200.0), (3 * M, 220.0))
        await case("NAN_D", 1, (0 * M, 100.0), (2 * M, float("nan")))
        await add_metric(conn, "NULLHIGH", t0, 100.0)
        await add_metric(conn, "NULLHIGH", t0 + M, 120.0, high=None, low=None, price_high=None)
        await add_metric(conn, "NULLHIGH", t0 + 2 * M, 105.0, low=90.0)
        cases.append(("NULLHIGH", 1))
        await add_metric(conn, "INFHIGH", t0, 100.0)
        high = await add_metric(conn, "INFHIGH", t0 + M, 101.0)
        await conn.execute(
            "UPDATE coin_metrics SET price_high = 'Infinity'::numeric WHERE id = $1", high
        )
        await add_metric(conn, "INFHIGH", t0 + 2 * M, 130.0)
        cases.append(("INFHIGH", 1))
        ids = {coin: await add_prediction(conn, model, coin, t0, prediction=p) for coin, p in cases}
        row = await active_models.full_row(conn, model)
        assert row is not None
    assert await Evaluator(pool, grace_seconds=30, interval=1, page_size=100).evaluate_due() == len(
        cases
    )

    async with pool.acquire() as conn:
        frame = await backtest_rows.coin_rows(conn, [c for c, _ in cases], None)
        stored = {
            r["coin_id"]: dict(r)
            for r in await conn.fetch(
                "SELECT coin_id, evaluation_result, evaluation_reason, actual_change_pct, "
                "max_gain_pct, max_drawdown_pct FROM predictions WHERE id = ANY($1::bigint[])",
                list(ids.values()),
            )
        }
    ticks = pl.DataFrame(
        {
            "mint": [c for c, _ in cases],
            "timestamp": [t0] * len(cases),
            "prediction": [p for _, p in cases],
        },
        schema={"mint": pl.String, "timestamp": pl.Datetime("us", "UTC"), "prediction": pl.Int64},
    )
    judged = outcomes(frame, ticks, target_of(row), datetime.now(UTC))
    seen = set()
    for b in judged.iter_rows(named=True):
        s = stored[b["mint"]]
        assert (b["outcome"], b["reason"]) == (s["evaluation_result"], s["evaluation_reason"]), (
            b,
            s,
        )
        for column in ("actual_change_pct", "max_gain_pct", "max_drawdown_pct"):
            if s[column] is None:
                assert b[column] is None, (b["mint"], column, b[column])
            else:
                assert abs(b[column] - s[column]) <= 1e-9 * max(1.0, abs(s[column])), b
        seen.add(b["outcome"])
    assert seen == {"success", "failed", "not_applicable"}
