"""The store statement finds a batch's existing tick rows by index, on a fresh database too.

A new installation starts with an empty prediction_ticks. A statement planned then
sees a table of no rows, and asyncpg's prepared statement may keep that (generic) plan
while the table grows, until autovacuum next analyzes it. Planned as a join, the
lookup of a batch's existing tick rows became a hash join over the whole table: its
cost grew with every stored tick (pg_stat_statements in a one-minute benchmark run:
1.65 ms per 20-coin batch early on, 2.9 ms half a minute later). The plans are read
with tests/query_plans.py, with the real arguments and as the generic plan.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from prediction_rows import add_model, batch_of
from query_plans import RecordingConnection, index_tables, plans, recording_connection

from storage.predictions.writes import insert_batch

AT = datetime(2026, 4, 1, 12, tzinfo=UTC)
# How the store statement may reach prediction_ticks: by a condition on the unique
# key (coin, time, source), the tick time or the id (the rows it locks or appends to).
BY_KEY = {"prediction_ticks_once", "prediction_ticks_data_time", "prediction_ticks_pkey"}


@pytest.fixture
async def conn(db_dsn: str) -> AsyncIterator[RecordingConnection]:
    connection = await recording_connection(db_dsn)
    try:
        yield connection
    finally:
        await connection.close()


async def _scans_of_ticks(conn: RecordingConnection) -> dict[str, list[str]]:
    indexes = await index_tables(conn)
    found = {
        str(plan): plan.scans_of("prediction_ticks", indexes)
        for plan in await plans(conn, conn.stop_recording(), "prediction_ticks")
    }
    assert any("generic" in plan for plan in found), "no prepared store statement recorded"
    return found


def _not_by_key(scans: dict[str, list[str]]) -> dict[str, list[str]]:
    """The plans that read prediction_ticks other than through a bounded index scan (its
    INSERT and UPDATE, ModifyTable nodes, write the rows found)."""
    return {
        plan: how
        for plan, how in scans.items()
        if any(
            way.endswith("(whole index)") or way.split()[-1] not in BY_KEY
            for way in how
            if way != "ModifyTable"
        )
    }


async def test_a_store_planned_on_an_empty_table_looks_ticks_up_by_index(
    conn: RecordingConnection,
) -> None:
    model = await add_model(conn, 5)
    conn.start_recording()
    coins = [f"coin{i}" for i in range(20)]
    stored = await insert_batch(conn, batch_of([(c, AT) for c in coins], [model]))
    assert stored.existing == [] and stored.model_gone == []
    assert _not_by_key(await _scans_of_ticks(conn)) == {}


async def test_a_store_into_a_grown_analyzed_table_looks_ticks_up_by_index(
    conn: RecordingConnection,
) -> None:
    model = await add_model(conn, 6)
    for minute in range(30):
        at = AT + timedelta(minutes=minute)
        await insert_batch(conn, batch_of([(f"coin{i}", at) for i in range(200)], [model]))
    await conn.execute("ANALYZE prediction_ticks")
    conn.start_recording()
    later = AT + timedelta(hours=1)
    await insert_batch(conn, batch_of([(f"coin{i}", later) for i in range(20)], [model]))
    scans = await _scans_of_ticks(conn)
    assert _not_by_key(scans) == {}
    # 200 coins share each tick time here: the unique key is the probe that fits.
    assert all("Index Scan prediction_ticks_once" in how for how in scans.values()), scans
