"""Predictions and their webhook jobs are stored together, once per coin tick."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from prediction_rows import add_model

from storage.outbox import OutboxJob
from storage.prediction_store import insert_with_jobs
from storage.predictions import NewPrediction

AT = datetime(2026, 4, 1, 12, tzinfo=UTC)


def _row(active_model_id: int, coin: str, at: datetime) -> NewPrediction:
    return NewPrediction(
        active_model_id=active_model_id,
        model_id=7,
        coin_id=coin,
        data_timestamp=at,
        phase_id=1,
        prediction=1,
        probability=0.9,
        alert_threshold=0.7,
        tag="alert",
        price_close_at_t=1e-7,
        market_cap_at_t=100.0,
        target_kind="time_based",
        target_variable="price_close",
        target_operator=None,
        target_value=None,
        future_minutes=5,
        price_change_percent=10.0,
        target_direction="up",
        source="stream",
        evaluation_due_at=at + timedelta(minutes=5),
    )


def _job(active_model_id: int, coin: str, at: datetime) -> OutboxJob:
    return OutboxJob(
        idempotency_key=f"{coin}|{at.isoformat()}|{active_model_id}",
        target_url="http://127.0.0.1:9/hook",
        coin_id=coin,
        data_timestamp=at,
        active_model_ids=(active_model_id,),
        model_ids=(7,),
        payload=json.dumps({"coin_id": coin, "predictions": []}),
    )


async def test_a_tick_stored_again_inserts_nothing_and_queues_no_second_job(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        model = await add_model(conn, 7)
        first = [("A", AT), ("B", AT)]
        stored, queued = await insert_with_jobs(
            conn, [_row(model, c, t) for c, t in first], [_job(model, c, t) for c, t in first]
        )
        assert {(s.coin_id, s.data_timestamp) for s in stored} == set(first)
        assert queued == 2
        # B's tick again, plus C's first tick: only C is new, only C gets a job.
        again = [("B", AT), ("C", AT)]
        stored, queued = await insert_with_jobs(
            conn, [_row(model, c, t) for c, t in again], [_job(model, c, t) for c, t in again]
        )
        assert [(s.coin_id, s.data_timestamp) for s in stored] == [("C", AT)]
        assert queued == 1
        jobs = await conn.fetch("SELECT coin_id, payload FROM webhook_outbox ORDER BY coin_id")
        assert [j["coin_id"] for j in jobs] == ["A", "B", "C"]
        assert jobs[2]["payload"] == {"coin_id": "C", "predictions": []}
        count = await conn.fetchval("SELECT count(*) FROM predictions")
        assert count == 3


async def test_a_failing_job_insert_stores_no_prediction(pool: asyncpg.Pool) -> None:
    """One statement, one transaction: a job that cannot be stored takes its rows along."""
    async with pool.acquire() as conn:
        model = await add_model(conn, 7)
        bad = dataclasses.replace(_job(model, "A", AT), payload="not json")
        with pytest.raises(asyncpg.PostgresError):
            await insert_with_jobs(conn, [_row(model, "A", AT)], [bad])
        assert await conn.fetchval("SELECT count(*) FROM predictions") == 0
        assert await conn.fetchval("SELECT count(*) FROM webhook_outbox") == 0


async def test_rows_of_two_models_in_one_call_keep_their_own_model_fields(
    pool: asyncpg.Pool,
) -> None:
    """One model's rows send the model's fields once; mixed rows send them per row."""
    async with pool.acquire() as conn:
        first, second = await add_model(conn, 7), await add_model(conn, 8)
        other = _row(second, "B", AT)._replace(model_id=8, alert_threshold=0.9, future_minutes=10)
        stored, _ = await insert_with_jobs(conn, [_row(first, "A", AT), other], [])
        assert len(stored) == 2
        rows = await conn.fetch(
            "SELECT coin_id, active_model_id, model_id, alert_threshold, future_minutes"
            " FROM predictions ORDER BY coin_id"
        )
        assert [tuple(r) for r in rows] == [("A", first, 7, 0.7, 5), ("B", second, 8, 0.9, 10)]
