"""The intake and history reads of coin_metrics use the indexes made for them.

On a table of realistic shape (150 000 ticks: 5 000 coins every 5 s, a batch
reads 50 of them), each query the storage functions send is planned by
PostgreSQL (tests/query_plans.py) with its real arguments and, for prepared
statements, as the generic plan asyncpg's statement cache may switch to after
five runs. A plan that scans the table
(Seq Scan) or reads another index fails the test with the whole plan in the
message: the collector's table grows by millions of rows a day, so a plan that
is fine on a test table of a thousand rows would stall the intake in production.
The shape matters too: with 1 000 coins a batch of 50 is 5 % of the table, and a
hash join over a sequential scan is rightly cheaper for load_rows_before.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from query_plans import RecordingConnection, index_tables, plans, recording_connection

from storage.intake import coin_metrics

COINS = 5_000
TICKS_PER_COIN = 30
STEP = timedelta(seconds=5)
START = datetime(2026, 6, 1, tzinfo=UTC)
END = START + STEP * TICKS_PER_COIN
PRIMARY_KEY = "coin_metrics_pkey"
BY_COIN_AND_TIME = "coin_metrics_mint_timestamp_idx"


@pytest.fixture
async def conn(db_dsn: str) -> AsyncIterator[RecordingConnection]:
    """A connection to a database whose coin_metrics holds the ticks of 5 000 coins,
    written as a collector does (one row per coin every 5 s, ids growing with time),
    with the statistics autovacuum would have gathered."""
    connection = await recording_connection(db_dsn)
    await connection.execute(
        f"""
        INSERT INTO coin_metrics (mint, "timestamp", phase_id_at_time, price_open,
            price_high, price_low, price_close, market_cap_close, volume_sol,
            buy_volume_sol, sell_volume_sol, num_buys, num_sells, unique_wallets)
        SELECT 'Mint' || lpad((g % {COINS})::text, 5, '0') || 'pump',
               $1::timestamptz + (g / {COINS}) * interval '5 seconds', 1,
               3e-8 * (1 + (g % 97) / 100.0), 3.1e-8, 2.9e-8, 3e-8 * (1 + (g % 89) / 100.0),
               30 + g % 50, (g % 13) / 10.0, (g % 7) / 10.0, (g % 5) / 10.0,
               g % 30, g % 20, g % 40
        FROM generate_series(0, {COINS * TICKS_PER_COIN - 1}) AS g
        """,
        START,
    )
    await connection.execute("ANALYZE coin_metrics")
    try:
        yield connection
    finally:
        await connection.close()


async def _scans(conn: RecordingConnection) -> dict[str, list[str]]:
    """For every plan of the recorded queries: how it reaches coin_metrics."""
    indexes = await index_tables(conn)
    found = {}
    for plan in await plans(conn, conn.stop_recording(), "coin_metrics"):
        found[str(plan)] = plan.scans_of("coin_metrics", indexes)
    assert found, "no query of coin_metrics was recorded"
    return found


def _only(scans: dict[str, list[str]], *allowed: str) -> dict[str, list[str]]:
    """The plans that reach coin_metrics other than in the `allowed` ways ("<node type>
    <index>", or an index name for any scan of it): none, if all is well."""
    return {
        plan: how
        for plan, how in scans.items()
        if not how or any(way not in allowed and way.split()[-1] not in allowed for way in how)
    }


async def test_intake_reads_walk_the_primary_key_in_order(conn: RecordingConnection) -> None:
    newest = int(await conn.fetchval("SELECT max(id) FROM coin_metrics"))
    conn.start_recording()
    # At start: where "an hour ago" falls, by bisection over the id.
    assert await coin_metrics.last_id_before(conn, START + STEP * 15) > 0
    # Then every poll: the next 500 rows after the cursor, and ids that may commit late.
    rows = await coin_metrics.read_ticks(conn, newest - 1_000, [newest - 5_000], 500, END)
    assert len(rows) == 500
    # With coin shards (every service): the same read for the shards held, and the
    # catch-up of a shard taken over, from its cursor up to the scan's position.
    shards = list(range(0, 64, 2))
    sharded = await coin_metrics.read_ticks(
        conn, newest - 1_000, [newest - 5_000], 500, END, shards=shards, shard_count=64
    )
    assert [r.id for r in sharded] == [r.id for r in rows]
    caught_up = await coin_metrics.read_shard_range(
        conn, newest - 3_000, newest - 1_000, [5], 64, 500, END
    )
    assert len(caught_up) == 500
    # In id order through bounded index scans: `id > $1 OR id = ANY($2)` was a bitmap
    # scan and a sort of every row after the cursor, and as a generic plan a walk of the
    # whole primary key with a filter (58 ms per read, commit 6dfbeb6).
    in_order = (f"Index Scan {PRIMARY_KEY}", f"Index Only Scan {PRIMARY_KEY}")
    assert _only(await _scans(conn), *in_order) == {}


async def test_history_reads_use_the_coin_and_time_index(conn: RecordingConnection) -> None:
    mints = [f"Mint{i:05d}pump" for i in range(0, COINS, 100)]  # a batch of 50 coins
    as_of = [END - STEP * 3] * len(mints)
    conn.start_recording()
    history = await coin_metrics.load_history(conn, mints, as_of, 20)
    assert history.height == 20 * len(mints)
    prefix = await coin_metrics.load_rows_before(conn, mints, [END - STEP * 10] * len(mints))
    assert prefix.height > 0
    # A manual prediction: the coin's newest tick, and its row at a moment.
    newest = await coin_metrics.latest_timestamp(conn, mints[0])
    assert newest is not None
    assert await coin_metrics.row_at_or_before(conn, mints[0], newest) is not None
    assert _only(await _scans(conn), BY_COIN_AND_TIME) == {}
