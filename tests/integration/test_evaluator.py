"""The evaluator against hand-built coin_metrics histories (CONTRACTS.md section 2)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import anyio
import asyncpg
import pytest
from prediction_rows import add_metric, add_model, add_prediction, prediction
from waiting import wait_for

from actors.housekeeping.evaluator import Evaluator
from actors.runtime import metrics
from storage.predictions import evaluations

M = timedelta(minutes=1)


@pytest.fixture
async def conn(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with pool.acquire() as connection:
        yield connection


async def _t0(conn: asyncpg.Connection) -> datetime:
    """A data timestamp two hours ago: its 5-minute window closed long before now."""
    now: datetime = await conn.fetchval("SELECT date_trunc('second', now())")
    return now - timedelta(hours=2)


def _evaluator(pool: asyncpg.Pool, **options: Any) -> Evaluator:
    values: dict[str, Any] = {"grace_seconds": 30, "interval": 0.05, "page_size": 100}
    values.update(options)
    return Evaluator(pool, **values)


async def test_up_target_reached_and_missed_for_positive_and_negative_predictions(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    t0 = await _t0(conn)
    yes = await add_model(conn, 1)  # up 10 % within 5 minutes
    no = await add_model(conn, 2)
    # PUMP: 100 -> dips to 90 (low) -> spikes to 130 (high, twice) -> 112 as of T+5; the row
    # after the window (high 300, low 50) must not count.
    await add_metric(conn, "PUMP", t0 - M, 80, high=500, low=1)
    await add_metric(conn, "PUMP", t0, 100)
    await add_metric(conn, "PUMP", t0 + 1 * M, 95, low=90)
    await add_metric(conn, "PUMP", t0 + 2 * M, 120, high=130)
    await add_metric(conn, "PUMP", t0 + 3 * M, 118, high=130)  # the first peak time counts
    await add_metric(conn, "PUMP", t0 + 4 * M, 112, high=115, low=108)
    await add_metric(conn, "PUMP", t0 + 6 * M, 200, high=300, low=50)
    # FLAT: 100 -> 105: the target is missed.
    await add_metric(conn, "FLAT", t0, 100)
    await add_metric(conn, "FLAT", t0 + 3 * M, 105)
    # EDGE: exactly +10 % on a row exactly at T+5, at pump.fun price scale.
    await add_metric(conn, "EDGE", t0, 0.00000003)
    await add_metric(conn, "EDGE", t0 + 5 * M, 0.000000033)

    reached_yes = await add_prediction(conn, yes, "PUMP", t0, prediction=1)
    missed_yes = await add_prediction(conn, yes, "FLAT", t0, prediction=1)
    edge_yes = await add_prediction(conn, yes, "EDGE", t0, prediction=1)
    reached_no = await add_prediction(conn, no, "PUMP", t0, prediction=0)
    missed_no = await add_prediction(conn, no, "FLAT", t0, prediction=0)

    assert await _evaluator(pool).evaluate_due() == 5

    row = await prediction(conn, reached_yes)
    assert row["evaluation_result"] == "success"
    assert row["evaluation_reason"] is None
    assert row["price_close_at_eval"] == pytest.approx(112)
    assert row["eval_price_timestamp"] == t0 + 4 * M
    assert row["actual_change_pct"] == pytest.approx(12)
    assert row["max_gain_pct"] == pytest.approx(30)
    assert row["max_gain_at"] == t0 + 2 * M
    assert row["max_drawdown_pct"] == pytest.approx(-10)
    assert row["max_drawdown_at"] == t0 + 1 * M
    assert row["evaluated_at"] is not None

    assert (await prediction(conn, missed_yes))["evaluation_result"] == "failed"
    assert (await prediction(conn, missed_yes))["actual_change_pct"] == pytest.approx(5)
    edge = await prediction(conn, edge_yes)
    assert (edge["evaluation_result"], edge["eval_price_timestamp"]) == ("success", t0 + 5 * M)
    assert edge["actual_change_pct"] == pytest.approx(10)
    assert (await prediction(conn, reached_no))["evaluation_result"] == "failed"
    assert (await prediction(conn, missed_no))["evaluation_result"] == "success"


async def test_down_target_reached_and_missed(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    t0 = await _t0(conn)
    down = dict(target_direction="down", price_change_percent=10.0)
    yes = await add_model(conn, 1, **down)
    no = await add_model(conn, 2, **down)
    await add_metric(conn, "DUMP", t0, 100)
    await add_metric(conn, "DUMP", t0 + 2 * M, 70, low=60, high=104)
    await add_metric(conn, "DUMP", t0 + 5 * M, 88)
    await add_metric(conn, "DRIFT", t0, 100)
    await add_metric(conn, "DRIFT", t0 + 4 * M, 95)

    dump_yes = await add_prediction(conn, yes, "DUMP", t0, prediction=1)
    drift_yes = await add_prediction(conn, yes, "DRIFT", t0, prediction=1)
    dump_no = await add_prediction(conn, no, "DUMP", t0, prediction=0)
    drift_no = await add_prediction(conn, no, "DRIFT", t0, prediction=0)

    assert await _evaluator(pool).evaluate_due() == 4

    dump = await prediction(conn, dump_yes)
    assert dump["evaluation_result"] == "success"
    assert dump["actual_change_pct"] == pytest.approx(-12)
    assert dump["max_drawdown_pct"] == pytest.approx(-40)
    assert dump["max_drawdown_at"] == t0 + 2 * M
    assert dump["max_gain_pct"] == pytest.approx(4)
    assert dump["max_gain_at"] == t0 + 2 * M
    assert (await prediction(conn, drift_yes))["evaluation_result"] == "failed"
    assert (await prediction(conn, dump_no))["evaluation_result"] == "failed"
    assert (await prediction(conn, drift_no))["evaluation_result"] == "success"


async def test_classic_model_is_judged_on_the_row_at_t(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    t0 = await _t0(conn)
    classic = await add_model(
        conn,
        3,
        target_kind="classic",
        target_variable="market_cap_close",
        target_operator=">",
        target_value=50000.0,
        future_minutes=None,
        price_change_percent=None,
        target_direction=None,
    )
    await add_metric(conn, "BIG", t0, 1.0, market_cap_close=60000)
    await add_metric(conn, "SMALL", t0, 1.0, market_cap_close=40000)
    # Later rows do not matter for a classic target.
    await add_metric(conn, "SMALL", t0 + M, 2.0, market_cap_close=90000)

    big = await add_prediction(conn, classic, "BIG", t0, prediction=1)
    small = await add_prediction(conn, classic, "SMALL", t0, prediction=1)
    small_other = await add_prediction(conn, classic, "SMALL", t0 - M, prediction=0)

    assert await _evaluator(pool).evaluate_due() == 3
    big_row = await prediction(conn, big)
    assert big_row["evaluation_result"] == "success"
    assert big_row["evaluation_due_at"] == t0
    assert big_row["eval_price_timestamp"] == t0
    assert big_row["actual_change_pct"] == pytest.approx(0)
    assert (await prediction(conn, small))["evaluation_result"] == "failed"
    # No row at T - 1 min for SMALL: nothing can be said.
    other = await prediction(conn, small_other)
    assert other["evaluation_result"] == "not_applicable"
    assert other["evaluation_reason"] == evaluations.REASON_NO_ROW_AT_T


async def test_missing_row_at_t_is_not_applicable_with_a_reason(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    t0 = await _t0(conn)
    model = await add_model(conn, 1)
    await add_metric(conn, "GHOST", t0 - M, 100)
    await add_metric(conn, "GHOST", t0 + 2 * M, 150)
    pid = await add_prediction(conn, model, "GHOST", t0, prediction=1)

    assert await _evaluator(pool).evaluate_due() == 1
    row = await prediction(conn, pid)
    assert row["evaluation_result"] == "not_applicable"
    assert row["evaluation_reason"] == evaluations.REASON_NO_ROW_AT_T
    assert row["actual_change_pct"] is None
    assert row["price_close_at_eval"] is None
    assert row["evaluated_at"] is not None


async def test_no_trade_after_t_keeps_the_last_price(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    t0 = await _t0(conn)
    yes = await add_model(conn, 1)
    no = await add_model(conn, 2)
    await add_metric(conn, "QUIET", t0, 100)
    await add_metric(conn, "QUIET", t0 + 10 * M, 500)  # after the window
    quiet_yes = await add_prediction(conn, yes, "QUIET", t0, prediction=1)
    quiet_no = await add_prediction(conn, no, "QUIET", t0, prediction=0)

    assert await _evaluator(pool).evaluate_due() == 2
    row = await prediction(conn, quiet_yes)
    assert row["evaluation_result"] == "failed"
    assert row["actual_change_pct"] == 0
    assert row["price_close_at_eval"] == pytest.approx(100)
    assert row["eval_price_timestamp"] == t0
    assert (row["max_gain_pct"], row["max_gain_at"]) == (None, None)
    assert (row["max_drawdown_pct"], row["max_drawdown_at"]) == (None, None)
    assert (await prediction(conn, quiet_no))["evaluation_result"] == "success"


async def test_zero_price_at_t_is_not_applicable(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    t0 = await _t0(conn)
    model = await add_model(conn, 1)
    await add_metric(conn, "ZERO", t0, 0)
    await add_metric(conn, "ZERO", t0 + M, 5)
    pid = await add_prediction(conn, model, "ZERO", t0, prediction=1)
    assert await _evaluator(pool).evaluate_due() == 1
    row = await prediction(conn, pid)
    assert row["evaluation_result"] == "not_applicable"
    assert row["evaluation_reason"] == evaluations.REASON_NO_PRICE_AT_T


async def test_deactivated_model_is_evaluated_with_its_stored_target(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    t0 = await _t0(conn)
    model = await add_model(conn, 1)  # up 10 %
    await add_metric(conn, "COIN", t0, 100)
    await add_metric(conn, "COIN", t0 + 3 * M, 111)
    pid = await add_prediction(conn, model, "COIN", t0, prediction=1)
    # The model is changed to a different target and deactivated after predicting.
    await conn.execute(
        """
        UPDATE active_models SET is_active = false, deactivated_at = now(),
            target_direction = 'down', price_change_percent = 50, future_minutes = 1
        WHERE id = $1
        """,
        model,
    )

    assert await _evaluator(pool).evaluate_due() == 1
    row = await prediction(conn, pid)
    assert row["evaluation_result"] == "success"  # judged as "up 10 % in 5 min"
    assert row["actual_change_pct"] == pytest.approx(11)


async def test_late_row_within_the_grace_period_counts(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    now: datetime = await conn.fetchval("SELECT now()")
    t0 = now - 5 * M - timedelta(seconds=10)  # due 10 s ago
    model = await add_model(conn, 1)
    await add_metric(conn, "LATE", t0, 100)
    pid = await add_prediction(conn, model, "LATE", t0, prediction=1)

    # Within the 60 s grace period nothing is judged yet ...
    assert await _evaluator(pool, grace_seconds=60).evaluate_due() == 0
    assert (await prediction(conn, pid))["evaluation_result"] is None
    # ... the collector then writes the T+4 row late, and it counts once the grace is over
    # (a grace of 5 s stands for "a little later").
    await add_metric(conn, "LATE", t0 + 4 * M, 125)
    assert await _evaluator(pool, grace_seconds=5).evaluate_due() == 1
    row = await prediction(conn, pid)
    assert row["evaluation_result"] == "success"
    assert row["actual_change_pct"] == pytest.approx(25)


async def test_pages_go_oldest_first_and_cover_every_due_prediction(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    t0 = await _t0(conn)
    model = await add_model(conn, 1)
    ids = []
    for i in range(25):
        at = t0 + i * timedelta(seconds=10)
        await add_metric(conn, "MANY", at, 100)
        ids.append(await add_prediction(conn, model, "MANY", at, prediction=0))
    now: datetime = await conn.fetchval("SELECT now()")
    future = await add_prediction(
        conn, model, "MANY", now, prediction=0, evaluation_due_at=now + 5 * M
    )

    # One page: exactly the 7 oldest.
    page = await evaluations.evaluate_due_page(conn, grace_seconds=30, limit=7)
    assert sorted(p.id for p in page) == ids[:7]
    pending = await conn.fetchval(
        "SELECT count(*) FROM predictions WHERE evaluation_result IS NULL"
    )
    assert pending == 19

    # The actor's catch-up goes through all remaining pages and leaves the future one.
    assert await _evaluator(pool, page_size=7).evaluate_due() == 18
    results = await conn.fetch("SELECT id, evaluation_result FROM predictions ORDER BY id")
    assert {r["id"]: r["evaluation_result"] for r in results} == {
        **{i: "success" for i in ids},
        future: None,
    }


async def test_failed_update_is_retried_on_the_next_cycle(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    t0 = await _t0(conn)
    model = await add_model(conn, 1)
    await add_metric(conn, "RETRY", t0, 100)
    await add_metric(conn, "RETRY", t0 + M, 120)
    pid = await add_prediction(conn, model, "RETRY", t0, prediction=1)
    # A real database refusal of the write (as a broken disk or a lock timeout would be).
    await conn.execute(
        "ALTER TABLE tick_outcomes ADD CONSTRAINT refuse_outcomes CHECK (tick_id IS NULL) NOT VALID"
    )
    evaluator = _evaluator(pool)
    async with anyio.create_task_group() as tg:
        await tg.start(evaluator.run)
        await wait_for(lambda: evaluator.failed_sweeps >= 2, what="two failed evaluation cycles")
        assert (await prediction(conn, pid))["evaluation_result"] is None
        await conn.execute("ALTER TABLE tick_outcomes DROP CONSTRAINT refuse_outcomes")

        async def evaluated() -> bool:
            return (await prediction(conn, pid))["evaluation_result"] == "success"

        await wait_for(evaluated, what="the prediction evaluated after the fault cleared")
        evaluator.request_stop()
    assert evaluator.evaluated_total == 1
    labels = {"active_model_id": str(model)}
    assert metrics.MODEL_EVALUATED.get(labels) == 1
    assert metrics.MODEL_LIVE_SUCCESS_RATE.get(labels) == 1.0


async def test_two_evaluators_at_once_judge_every_prediction_once(
    pool: asyncpg.Pool, conn: asyncpg.Connection
) -> None:
    """Two processes may run the evaluator at once for a moment (a housekeeping lease
    taken over from a paused holder, actors/shards/role_lease.py): they share the due paths,
    each judged once, and their counts add up to the predictions judged."""
    t0 = await _t0(conn)
    models = [await add_model(conn, 1), await add_model(conn, 2)]
    ids = []
    for i in range(60):
        at = t0 + i * timedelta(seconds=10)
        await add_metric(conn, f"C{i % 6}", at, 100)
        for model in models:
            ids.append(await add_prediction(conn, model, f"C{i % 6}", at, prediction=0))
    first, second = _evaluator(pool, page_size=4), _evaluator(pool, page_size=4)
    counts: list[int] = []

    async def sweep(evaluator: Evaluator) -> None:
        counts.append(await evaluator.evaluate_due())

    async with anyio.create_task_group() as tg:
        tg.start_soon(sweep, first)
        tg.start_soon(sweep, second)

    outcomes = await conn.fetchval("SELECT count(*) FROM tick_outcomes")
    judged = await conn.fetch("SELECT id, evaluation_result FROM predictions")
    assert sum(counts) == len(ids)
    assert outcomes == 60  # one per tick and horizon, shared by both models
    assert {r["id"]: r["evaluation_result"] for r in judged} == dict.fromkeys(ids, "success")
    assert not await conn.fetchval("SELECT count(*) FROM prediction_due")
