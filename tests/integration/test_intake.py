"""Every new coin_metrics row reaches the batcher output once, through faults."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import anyio
import asyncpg
from anyio.streams.memory import MemoryObjectReceiveStream
from coin_rows import coin_rows, insert_rows
from intake_cursor import intake_cursor
from service_runner import running_service
from waiting import wait_for

from actors.app.service import Service
from actors.scoring.batch import Batch
from actors.scoring.batch_bus import BatchBus
from storage.config import Settings

TEST_KEY = 10_000_001  # a subscriber id no active model will have


class BatchTap:
    """A subscriber on the batch bus that records what the batcher hands out."""

    def __init__(self) -> None:
        self.rows: Counter[int] = Counter()
        self.batches = 0
        self.history_rows = 0

    async def consume(self, receive: MemoryObjectReceiveStream[Batch]) -> None:
        async for batch in receive:
            self.batches += 1
            self.history_rows += batch.history.height
            self.rows.update(t.row_id for t in batch.ticks)
            batch.completion.ack(TEST_KEY)


@asynccontextmanager
async def service_with_tap(settings: Settings) -> AsyncIterator[tuple[Service, BatchTap]]:
    bus, tap = BatchBus(), BatchTap()
    async with anyio.create_task_group() as tg:
        # Subscribed before the service starts: the catch-up batches reach the tap too.
        tg.start_soon(tap.consume, bus.subscribe(TEST_KEY))
        async with running_service(settings, bus=bus) as service:
            yield service, tap
        tg.cancel_scope.cancel()


def one_row_per_coin(n: int, prefix: str) -> list[dict[str, object]]:
    now = datetime.now(UTC)
    return [coin_rows(f"{prefix}{i}", 1, start=now, seed=i)[0] for i in range(n)]


async def test_a_new_row_reaches_the_batcher_once_within_moments(
    settings: Settings, db_dsn: str
) -> None:
    # Polling is slow here: only the NOTIFY path can deliver the row quickly.
    async with service_with_tap(settings.replace(polling_interval_seconds=30)) as (service, tap):
        conn = await asyncpg.connect(db_dsn)
        try:
            [row_id] = await insert_rows(conn, coin_rows("mintA", 1))
        finally:
            await conn.close()
        await wait_for(lambda: _has(tap, row_id), timeout=5, what="the row in a batch")
        await anyio.sleep(0.3)  # a second delivery would show up by now
        assert tap.rows[row_id] == 1
        assert tap.history_rows >= 1  # history was loaded for the coin
    assert service.state.listener_up is False  # listener stopped with the service


def _has(tap: BatchTap, *row_ids: int) -> bool:
    return all(tap.rows[r] >= 1 for r in row_ids)


async def test_ten_thousand_rows_in_bulk_arrive_none_lost_none_twice(
    settings: Settings, db_dsn: str
) -> None:
    async with service_with_tap(settings) as (_, tap):
        conn = await asyncpg.connect(db_dsn)
        ids: list[int] = []
        try:
            rows = one_row_per_coin(10_000, "bulk")
            for start in range(0, len(rows), 500):
                ids += await insert_rows(conn, rows[start : start + 500])
            await wait_for(lambda: _has(tap, *ids), timeout=60, what="all 10 000 rows")
            cursor = await wait_for(
                lambda: _cursor_at_least(conn, max(ids)), timeout=10, what="the cursor"
            )
        finally:
            await conn.close()
    assert len(ids) == 10_000
    assert sorted(tap.rows) == sorted(ids)
    assert max(tap.rows.values()) == 1, "a row was delivered twice"
    assert cursor >= max(ids)


async def _cursor_at_least(conn: asyncpg.Connection, wanted: int) -> int | None:
    value = await intake_cursor(conn)
    return value if value >= wanted else None


async def test_killing_the_listener_backend_loses_no_row(settings: Settings, db_dsn: str) -> None:
    fast = settings.replace(
        polling_interval_seconds=30,  # only NOTIFY and the reconnect catch-up can deliver
        listener_probe_interval_seconds=0.2,
        listener_probe_timeout_seconds=1.0,
    )
    async with service_with_tap(fast) as (service, tap):
        listener = service.supervisor.actor("listener")
        conn = await asyncpg.connect(db_dsn)
        ids: list[int] = []
        try:
            for i in range(20):
                ids += await insert_rows(conn, one_row_per_coin(5, f"k{i}_"))
                if i == 5:
                    await conn.execute("SELECT pg_terminate_backend($1)", listener.backend_pid)
                await anyio.sleep(0.02)
            await wait_for(lambda: _has(tap, *ids), timeout=15, what="rows after the kill")
        finally:
            await conn.close()
        assert listener.connections >= 2, "the listener did not reconnect"
        assert service.state.listener_up
    assert max(tap.rows.values()) == 1


async def test_rows_inserted_while_the_service_was_down_are_processed_on_start(
    settings: Settings, db_dsn: str
) -> None:
    conn = await asyncpg.connect(db_dsn)
    try:
        async with service_with_tap(settings) as (_, tap):
            first = await insert_rows(conn, one_row_per_coin(10, "before"))
            await wait_for(lambda: _has(tap, *first), what="rows before the restart")
        while_down = await insert_rows(conn, one_row_per_coin(50, "down"))
        async with service_with_tap(settings) as (_, tap2):
            await wait_for(lambda: _has(tap2, *while_down), what="rows inserted while down")
    finally:
        await conn.close()
    assert max(tap2.rows.values()) == 1


async def test_a_row_committed_late_with_a_lower_id_is_not_skipped(
    settings: Settings, db_dsn: str
) -> None:
    async with service_with_tap(settings) as (_, tap):
        slow = await asyncpg.connect(db_dsn)
        fast = await asyncpg.connect(db_dsn)
        try:
            tx = slow.transaction()
            await tx.start()
            [late] = await insert_rows(slow, coin_rows("late", 1))
            [early] = await insert_rows(fast, coin_rows("early", 1))
            assert late < early
            await wait_for(lambda: _has(tap, early), what="the row committed first")
            await tx.commit()
            await wait_for(lambda: _has(tap, late), what="the row committed late")
        finally:
            await slow.close()
            await fast.close()
    assert tap.rows[late] == 1 and tap.rows[early] == 1


async def test_empty_and_malformed_notifications_are_harmless(
    settings: Settings, db_dsn: str
) -> None:
    async with service_with_tap(settings.replace(polling_interval_seconds=30)) as (service, tap):
        listener = service.supervisor.actor("listener")
        conn = await asyncpg.connect(db_dsn)
        try:
            await conn.execute("SELECT pg_notify('coin_metrics_insert', 'not json at all')")
            await conn.execute("""SELECT pg_notify('coin_metrics_insert', '{"rows": 0}')""")
            await conn.execute("SELECT pg_notify('coin_metrics_insert', '')")
            [row_id] = await insert_rows(conn, coin_rows("after", 1))
            await wait_for(lambda: _has(tap, row_id), timeout=5, what="the row after garbage")
        finally:
            await conn.close()
        assert listener.connections == 1 and service.state.listener_up
        assert "listener" in service.supervisor.actor_names
        assert service.state.actor_restarts.get("listener", 0) == 0
    assert sum(tap.rows.values()) == 1


async def test_first_start_does_not_replay_rows_older_than_the_catch_up_bound(
    settings: Settings, db_dsn: str
) -> None:
    conn = await asyncpg.connect(db_dsn)
    try:
        old = await insert_rows(
            conn, coin_rows("ancient", 20, start=datetime.now(UTC) - timedelta(days=30))
        )
        recent = await insert_rows(conn, one_row_per_coin(5, "recent"))
        async with service_with_tap(settings.replace(catchup_max_age_seconds=3600)) as (_, tap):
            await wait_for(lambda: _has(tap, *recent), what="recent rows")
    finally:
        await conn.close()
    assert not set(old) & set(tap.rows), "rows older than the catch-up bound were replayed"


async def test_one_notification_per_insert_statement(db_dsn: str) -> None:
    listener = await asyncpg.connect(db_dsn)
    writer = await asyncpg.connect(db_dsn)
    got: list[str] = []
    try:
        await listener.add_listener("coin_metrics_insert", lambda *a: got.append(a[3]))
        ids = await insert_rows(writer, one_row_per_coin(300, "stmt"))
        await wait_for(lambda: bool(got), what="the notification")
        await anyio.sleep(0.2)
    finally:
        await listener.close()
        await writer.close()
    assert len(got) == 1
    assert got[0] == f'{{"rows" : 300, "max_id" : {max(ids)}}}'
