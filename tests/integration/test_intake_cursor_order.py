"""The intake cursor never passes a batch whose predictions are not stored.

A batch moves the cursor in its own storing transaction only when every batch before
it has moved it; a batch stored while an earlier one is still storing waits for it.
Real service, real models, real PostgreSQL: an open transaction holding the tick row
the first batch inserts keeps that batch's store waiting.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import asyncpg
from coin_rows import coin_rows, insert_rows
from intake_cursor import cursor_reached
from service_runner import predictors_running, running_service
from waiting import wait_for
from webhook_receiver import add_trained_models

from storage.config import Settings
from storage.db.pool import connect

FEATURES = ["price_close", "volume_sol", "buy_pressure_ratio", "num_buys", "price_roc_5"]


async def _predicted(conn: asyncpg.Connection, ticks: dict[str, datetime], models: int) -> bool:
    rows = await conn.fetch("SELECT coin_id, data_timestamp FROM predictions")
    seen = Counter((r[0], r[1]) for r in rows)
    return all(seen[(coin, at)] == models for coin, at in ticks.items())


async def test_a_batch_stored_before_an_earlier_one_does_not_move_the_cursor_past_it(
    settings: Settings, db_dsn: str, tmp_path: Path
) -> None:
    conn = await connect(db_dsn)
    blocker = await connect(db_dsn)
    try:
        models = await add_trained_models(conn, tmp_path, 601, FEATURES)
        quick = settings.replace(batch_timeout_seconds=0.01)
        async with running_service(quick) as service:
            await wait_for(lambda: predictors_running(service) == len(models), what="predictors")
            start = datetime.now(UTC) - timedelta(minutes=5)
            # A first tick stores the models' target rows (the later stores would wait
            # for the blocked one's uncommitted target rows otherwise).
            [warm] = coin_rows("coinC", 1, start=start, seed=3)
            await insert_rows(conn, [warm])
            await wait_for(
                lambda: _predicted(conn, {"coinC": warm["timestamp"]}, len(models)),
                what="a first tick",
            )
            [first] = coin_rows("coinA", 1, start=start, seed=1)
            # The first batch's tick row, inserted and not committed: its store waits.
            await blocker.execute("BEGIN")
            await blocker.execute(
                "INSERT INTO prediction_ticks (coin_id, data_timestamp, source, target_ids,"
                " probabilities) VALUES ($1, $2, 's', '{}', '{}')",
                first["mint"],
                first["timestamp"],
            )
            [first_id] = await insert_rows(conn, [first])
            await wait_for(lambda: _waiting_for_lock(conn), what="the first batch's store waiting")
            second = coin_rows("coinB", 1, start=start, seed=2)
            [second_id] = await insert_rows(conn, second)
            later = {"coinB": second[0]["timestamp"]}
            await wait_for(lambda: _predicted(conn, later, len(models)), what="the second batch")
            # Stored and committed, yet the cursor waits for the first batch.
            for _ in range(5):
                assert not await cursor_reached(conn, first_id)
                await anyio.sleep(0.1)
            await blocker.execute("ROLLBACK")
            await wait_for(lambda: cursor_reached(conn, second_id), what="the cursor")
            both = {"coinA": first["timestamp"], **later}
            assert await _predicted(conn, both, len(models))
    finally:
        await blocker.close()
        await conn.close()


async def _waiting_for_lock(conn: asyncpg.Connection) -> bool:
    """Some backend of this database waits for a lock (the first batch's INSERT)."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database())"
        )
    )
