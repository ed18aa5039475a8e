"""Predictions and their webhook jobs are stored together, once per coin tick."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from prediction_rows import add_model, new_prediction
from waiting import wait_for

from storage.outbox.jobs import OutboxJob
from storage.predictions.manual import insert_with_jobs
from storage.predictions.reads import delete_model_predictions
from storage.predictions.writes import (
    BatchInsert,
    BatchRows,
    ModelTarget,
    TargetIds,
    insert_batch,
    insert_predictions,
)

AT = datetime(2026, 4, 1, 12, tzinfo=UTC)


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
            conn,
            [new_prediction(model, c, t) for c, t in first],
            [_job(model, c, t) for c, t in first],
        )
        assert {(s.coin_id, s.data_timestamp) for s in stored} == set(first)
        assert queued == 2
        # B's tick again, plus C's first tick: only C is new, only C gets a job.
        again = [("B", AT), ("C", AT)]
        stored, queued = await insert_with_jobs(
            conn,
            [new_prediction(model, c, t) for c, t in again],
            [_job(model, c, t) for c, t in again],
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
            await insert_with_jobs(conn, [new_prediction(model, "A", AT)], [bad])
        assert await conn.fetchval("SELECT count(*) FROM predictions") == 0
        assert await conn.fetchval("SELECT count(*) FROM webhook_outbox") == 0


async def test_rows_of_two_models_in_one_call_keep_their_own_model_fields(
    pool: asyncpg.Pool,
) -> None:
    """One model's rows send the model's fields once; mixed rows send them per row."""
    async with pool.acquire() as conn:
        first, second = await add_model(conn, 7), await add_model(conn, 8)
        other = new_prediction(second, "B", AT)._replace(
            model_id=8, alert_threshold=0.9, future_minutes=10
        )
        stored, _ = await insert_with_jobs(conn, [new_prediction(first, "A", AT), other], [])
        assert len(stored) == 2
        rows = await conn.fetch(
            "SELECT coin_id, active_model_id, model_id, alert_threshold, future_minutes"
            " FROM predictions ORDER BY coin_id"
        )
        assert [tuple(r) for r in rows] == [("A", first, 7, 0.7, 5), ("B", second, 8, 0.9, 10)]


def _target(active_model_id: int, model_id: int, minutes: int, threshold: float) -> ModelTarget:
    return ModelTarget(
        active_model_id=active_model_id,
        model_id=model_id,
        alert_threshold=threshold,
        target_kind="time_based",
        target_variable="price_close",
        target_operator=None,
        target_value=None,
        future_minutes=minutes,
        price_change_percent=10.0,
        target_direction="up",
        evaluation_delay=timedelta(minutes=minutes),
    )


async def test_a_batch_of_several_models_is_one_insert_that_says_what_it_left_out(
    pool: asyncpg.Pool,
) -> None:
    """Each tick and each model is sent once; a prediction stored before and a model
    deleted meanwhile are reported by position, and nothing else is left out."""
    async with pool.acquire() as conn:
        first, second = await add_model(conn, 7), await add_model(conn, 8)
        gone = await add_model(conn, 9)
        await conn.execute("DELETE FROM active_models WHERE id = $1", gone)
        await insert_predictions(conn, [new_prediction(first, "A", AT)])  # A predicted before
        later = AT + timedelta(seconds=3)
        rows = BatchRows(
            models=[
                _target(first, 7, 5, 0.7),
                _target(second, 8, 10, 0.9),
                _target(gone, 9, 5, 0.7),
            ],
            coin_ids=["A", "B"],
            data_timestamps=[AT, later],
            phase_ids=[1, None],
            price_closes=[1e-7, 2e-7],
            market_caps=[100.0, None],
            model_index=[0, 0, 1, 1, 2],
            tick_index=[0, 1, 0, 1, 1],
            predictions=[1, 0, 1, 1, 1],
            probabilities=[0.95, 0.2, 0.8, 0.91, 0.6],
            tags=["alert", "negative", "positive", "alert", "positive"],
        )
        outcome = await insert_batch(conn, rows)
        assert outcome == BatchInsert(existing=[0], model_gone=[4])
        stored = await conn.fetch(
            "SELECT active_model_id, model_id, coin_id, data_timestamp, phase_id, prediction,"
            " probability, alert_threshold, tag, price_close_at_t, market_cap_at_t,"
            " future_minutes, source, evaluation_due_at - data_timestamp AS delay"
            " FROM predictions WHERE data_timestamp = $1 OR active_model_id = $2"
            " ORDER BY active_model_id, coin_id",
            later,
            second,
        )
        assert [tuple(r) for r in stored] == [
            (first, 7, "B", later, None, 0, 0.2, 0.7, "negative", 2e-7, None, 5, "stream",
             timedelta(minutes=5)),
            (second, 8, "A", AT, 1, 1, 0.8, 0.9, "positive", 1e-7, 100.0, 10, "stream",
             timedelta(minutes=10)),
            (second, 8, "B", later, None, 1, 0.91, 0.9, "alert", 2e-7, None, 10, "stream",
             timedelta(minutes=10)),
        ]  # fmt: skip
        # The one stored before kept its values.
        assert (
            await conn.fetchval(
                "SELECT probability FROM predictions WHERE active_model_id = $1 AND coin_id = 'A'",
                first,
            )
            == 0.9
        )
        # The same batch again inserts nothing, and says so.
        again = await insert_batch(conn, rows)
        assert again == BatchInsert(existing=[0, 1, 2, 3], model_gone=[4])
        assert await conn.fetchval("SELECT count(*) FROM predictions") == 4


async def test_two_writers_creating_one_coin_tick_at_once_both_keep_their_predictions(
    pool: asyncpg.Pool,
) -> None:
    """A model storing its own rows and the batch writer create the same coin tick's row
    at the same time: the second waits on the first's key, then appends to its row."""
    async with pool.acquire() as first, pool.acquire() as second:
        a = await add_model(first, 31)
        b = await add_model(first, 32)
        transaction = first.transaction()
        await transaction.start()
        stored_a = await insert_predictions(first, [new_prediction(a, "RACE", AT)])
        late = asyncio.create_task(insert_predictions(second, [new_prediction(b, "RACE", AT)]))

        async def waiting_on_the_key() -> bool:
            state = await pool.fetchval(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1",
                second.get_server_pid(),
            )
            return bool(state == "Lock")

        await wait_for(waiting_on_the_key, what="the second writer waiting on the tick's key")
        await transaction.commit()
        stored_b = await late
        rows = await pool.fetch("SELECT id, active_model_id FROM predictions ORDER BY id")
    assert [(r["id"], r["active_model_id"]) for r in rows] == [
        (stored_a[0].id, a),
        (stored_b[0].id, b),
    ]
    assert await pool.fetchval("SELECT count(*) FROM prediction_ticks") == 1


def _one_tick(model: int, coin: str, at: datetime) -> BatchRows:
    return BatchRows(
        models=[_target(model, 7, 5, 0.7)],
        coin_ids=[coin],
        data_timestamps=[at],
        phase_ids=[1],
        price_closes=[1e-7],
        market_caps=[100.0],
        model_index=[0],
        tick_index=[0],
        predictions=[1],
        probabilities=[0.8],
        tags=["positive"],
    )


async def _stored_models(conn: asyncpg.Connection, coin: str) -> list[tuple[int, int, float]]:
    rows = await conn.fetch(
        "SELECT active_model_id, future_minutes, probability FROM predictions WHERE coin_id = $1",
        coin,
    )
    return [tuple(r) for r in rows]


async def test_a_known_target_id_whose_row_was_deleted_is_written_again(
    pool: asyncpg.Pool,
) -> None:
    """The batcher remembers its models' target ids (no lookup per batch). Deleting a
    model's predictions deletes its target rows while the model stays: its next
    predictions get a new target row, none is dropped as of a deleted model."""
    async with pool.acquire() as conn:
        model = await add_model(conn, 7)
        known = TargetIds()
        first = await insert_batch(conn, _one_tick(model, "A", AT), known)
        assert first.existing == first.model_gone == []
        known.remember(first.learned)
        assert await delete_model_predictions(conn, model) == 1
        again = await insert_batch(conn, _one_tick(model, "B", AT), known)
        assert again.existing == again.model_gone == []
        assert await _stored_models(conn, "B") == [(model, 5, 0.8)]
        assert await conn.fetchval("SELECT count(*) FROM prediction_targets") == 1
        # The new row's id is learned again; the model's next batch needs no lookup.
        known.remember(again.learned)
        third = await insert_batch(conn, _one_tick(model, "C", AT), known)
        assert third == BatchInsert([], [], ())
        assert await _stored_models(conn, "C") == [(model, 5, 0.8)]


async def test_a_target_row_of_a_rolled_back_transaction_is_not_taken_for_stored(
    pool: asyncpg.Pool,
) -> None:
    """The first store of a model version inserts its target row; if that transaction
    rolls back, the id it learned names no row: a store that uses it anyway (had a
    caller remembered it) writes the row again rather than drop the predictions."""
    async with pool.acquire() as conn:
        model = await add_model(conn, 7)
        known = TargetIds()
        tx = conn.transaction()
        await tx.start()
        lost = await insert_batch(conn, _one_tick(model, "A", AT), known)
        await tx.rollback()
        assert await conn.fetchval("SELECT count(*) FROM prediction_targets") == 0
        known.remember(lost.learned)
        stored = await insert_batch(conn, _one_tick(model, "B", AT), known)
        assert stored.model_gone == []
        assert await _stored_models(conn, "B") == [(model, 5, 0.8)]
        # A model really deleted is still reported so.
        known.remember(stored.learned)
        await conn.execute("DELETE FROM active_models WHERE id = $1", model)
        gone = await insert_batch(conn, _one_tick(model, "C", AT), known)
        assert gone.model_gone == [0]
