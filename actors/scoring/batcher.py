"""Coalesce ticks per coin, flush on size or age, load history once, fan out.

Flushes at once when no batch is in flight (an idle pipeline gains nothing by
waiting), else when BATCH_SIZE coins are pending or the oldest pending tick has
waited BATCH_TIMEOUT_SECONDS. Ticks keep arriving while a batch is being loaded or
waits for slow predictors, and are coalesced per coin (the latest wins): when
downstream is slow, batches grow instead of queues.

Once every predictor is done with a batch, one transaction stores every
model's predictions (`actors.scoring.batch_writer`) with the batch's webhook jobs, one
per URL and coin tick with every model's prediction (CONTRACTS.md section 4:
one POST per URL and processed coin). The durable cursor advances in batch
order, past batches whose transaction committed: never before the work it
confirms. When every batch before it has moved the cursor already (the usual
case), a batch moves it in its own storing transaction; otherwise once the
batches before it did, with a statement of its own.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Protocol, TypeVar

import anyio
import asyncpg
import polars as pl
import structlog
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.runtime import metrics
from actors.runtime.messages import Tick, TickPage
from actors.runtime.state import ServiceState
from actors.scoring.batch import Batch, BatchCompletion
from actors.scoring.batch_bus import BatchBus
from actors.scoring.batch_writer import (
    STORE_FAILED,
    ModelScores,
    TickKey,
    Written,
    fence,
    restrict,
    tick_keys,
    write_batch,
)
from actors.scoring.history_cache import HistoryCache
from actors.scoring.prefix_cache import PrefixCache
from actors.scoring.shared_features import SharedFeatures, tick_frame
from actors.scoring.store_limits import limits_apply
from actors.shards.shard_set import ShardSet
from actors.webhooks.follow_ups import queue_follow_ups
from actors.webhooks.payload import WebhookItem, tick_jobs
from features.columns import BASE_COLUMNS
from features.running import empty_prefix
from storage.config import Settings
from storage.db.pool import PERMANENT_ERRORS, store_in_halves
from storage.intake import coin_metrics, cursor, shard_leases
from storage.outbox import jobs as outbox
from storage.predictions.writes import TargetIds

log = structlog.get_logger(__name__)


class JobHandoff(Protocol):
    """This process's webhook dispatcher, as the batcher sees it (`actors.webhooks.Handoff`)."""

    def room(self, jobs: Sequence[outbox.OutboxJob]) -> outbox.LeasePlan: ...

    def take(
        self, jobs: list[outbox.ClaimedJob], snapshots: Mapping[str, str], expires: float
    ) -> None: ...


COMMIT_ATTEMPTS = 3
# Flush reason of an empty batch that only moves the cursor past rows the poller skipped.
SKIPPED_ROWS = "skipped_rows"
# Batches whose predictions are being stored at once (each holds a pool connection).
STORES_IN_FLIGHT = 3
# The longest a storing transaction may hold up a batcher that is being cancelled.
STORE_DEADLINE_SECONDS = 30.0
T = TypeVar("T")


class Batcher:
    def __init__(
        self,
        pool: asyncpg.Pool,
        pages: MemoryObjectReceiveStream[TickPage],
        bus: BatchBus,
        state: ServiceState,
        *,
        batch_size: int,
        batch_timeout: float,
        history_size: int,
        cursor_name: str = cursor.DEFAULT_NAME,
        on_jobs_queued: Callable[[], None] | None = None,
        default_webhook_url: str | None = None,
        shards: ShardSet | None = None,
        handoff: JobHandoff | None = None,
    ) -> None:
        self._pool = pool
        self._shards = shards
        # The batch's webhook jobs go straight to this process's dispatcher, leased in
        # the storing transaction (no claim query, no second row version per job); the
        # ones it has no room for wait for a claim (`on_jobs_queued` pokes it).
        self._handoff = handoff
        # With coin shards: the shards the newest page covers, those of the last flush,
        # and per batch in flight the shards whose cursors it may move.
        self._covered: Mapping[int, int] | None = None
        self._flushed_covered: Mapping[int, int] | None = None
        self._batch_covered: dict[int, Mapping[int, int] | None] = {}
        self._default_url = default_webhook_url
        self._on_jobs_queued = on_jobs_queued
        self._pages = pages
        self._bus = bus
        self._state = state
        self._batch_size = batch_size
        self._batch_timeout = batch_timeout
        self._history_size = history_size
        self._cursor_name = cursor_name
        self._pending: dict[str, Tick] = {}
        self._pending_max_id = 0
        self._flushed_max_id = 0  # the highest row id a batch has carried to the cursor
        self._oldest_at: float | None = None
        self._changed = anyio.Event()
        self._stopping = False
        self._batch_ids = 0
        self._prefix = PrefixCache(self._rows_before)
        self._history = HistoryCache()
        self._oldest_seen: dict[str, datetime] = {}  # per pending coin, its oldest tick time
        self._confirm_send: MemoryObjectSendStream[tuple[Batch, datetime | None]] | None = None
        self._in_flight = 0  # batches published and not yet acknowledged by every predictor
        self.cursor_position = 0
        # The newest batch id up to which every batch's cursor move is committed, and the
        # positions of the batches that moved it in their storing transaction (committed,
        # not yet taken by `_advance`).
        self._cursor_batch = 0
        self._moved: dict[int, int] = {}
        # The models' prediction target ids, known committed: no lookup per batch.
        self._targets = TargetIds()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        pool: asyncpg.Pool,
        pages: MemoryObjectReceiveStream[TickPage],
        bus: BatchBus,
        state: ServiceState,
        on_jobs_queued: Callable[[], None] | None = None,
        shards: ShardSet | None = None,
        handoff: JobHandoff | None = None,
    ) -> Batcher:
        return cls(
            pool,
            pages,
            bus,
            state,
            batch_size=settings.batch_size,
            batch_timeout=settings.batch_timeout_seconds,
            history_size=settings.feature_history_size,
            on_jobs_queued=on_jobs_queued,
            default_webhook_url=settings.n8n_webhook_url or None,
            shards=shards,
            handoff=handoff,
        )

    def request_stop(self) -> None:
        """Flush what is pending, wait for its acknowledgements, write the cursor, return."""
        self._stopping = True
        self._changed.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        confirm_send, confirm_receive = anyio.create_memory_object_stream[
            tuple[Batch, datetime | None]
        ](64)
        self._confirm_send = confirm_send
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._confirm, confirm_receive)
            collector = anyio.CancelScope()
            tg.start_soon(self._collect, collector)
            task_status.started()
            try:
                await self._flush_loop()
            finally:
                collector.cancel()
                confirm_send.close()

    async def _collect(self, scope: anyio.CancelScope) -> None:
        with scope:
            async for page in self._pages:
                self.add(page.ticks, page.last_row_id, page.covered)

    def add(
        self,
        ticks: tuple[Tick, ...],
        last_row_id: int = 0,
        covered: Mapping[int, int] | None = None,
    ) -> None:
        now = time.time()
        if covered is not None and covered != self._covered:
            self._covered = covered
            self._changed.set()
        if last_row_id > self._pending_max_id:
            # Rows the poller skipped count too: the cursor moves past them.
            self._pending_max_id = last_row_id
            self._changed.set()
        for tick in ticks:
            seen = self._oldest_seen.get(tick.coin_id)
            if seen is None or tick.data_timestamp < seen:
                self._oldest_seen[tick.coin_id] = tick.data_timestamp
            current = self._pending.get(tick.coin_id)
            if current is None or (tick.data_timestamp, tick.row_id) >= (
                current.data_timestamp,
                current.row_id,
            ):
                self._pending[tick.coin_id] = tick
            self._pending_max_id = max(self._pending_max_id, tick.row_id)
            lag = now - tick.data_timestamp.timestamp()
            metrics.INTAKE_LAG.observe({}, max(lag, 0.0))
        if ticks:
            self._state.intake_lag_seconds = now - max(t.data_timestamp for t in ticks).timestamp()
            self._state.last_tick_at = now
            metrics.TICKS_RECEIVED.add({}, len(ticks))
            if self._oldest_at is None:
                self._oldest_at = now
            self._changed.set()

    async def _flush_loop(self) -> None:
        while True:
            reason = await self._wait_for_flush()
            if reason is None:
                return
            await self.flush(reason)

    async def _wait_for_flush(self) -> str | None:
        while True:
            if self._pending:
                if len(self._pending) >= self._batch_size:
                    return "size"
                if self._stopping:
                    return "shutdown"
                if self._in_flight == 0:
                    return "idle"
                assert self._oldest_at is not None
                remaining = self._oldest_at + self._batch_timeout - time.time()
                if remaining <= 0:
                    return "timeout"
            elif (
                self._pending_max_id > self._flushed_max_id
                or self._covered != self._flushed_covered
            ):
                return SKIPPED_ROWS
            elif self._stopping:
                return None
            else:
                remaining = None
            self._changed = anyio.Event()
            with anyio.move_on_after(remaining if remaining is not None else 3600):
                await self._changed.wait()

    async def flush(self, reason: str) -> Batch:
        if reason == SKIPPED_ROWS:
            return await self._pass_skipped_rows()
        ticks = tuple(sorted(self._pending.values(), key=lambda t: t.row_id))
        max_row_id, waited = self._pending_max_id, time.time() - (self._oldest_at or time.time())
        self._flushed_max_id = max_row_id
        oldest_seen = self._oldest_seen
        self._pending, self._oldest_at, self._oldest_seen = {}, None, {}
        self._batch_ids += 1
        self._batch_covered[self._batch_ids] = self._flushed_covered = self._covered
        expected = set(self._bus.subscriber_ids)
        completion = BatchCompletion(expected)
        if expected:
            history, prefix = await self._load(ticks, oldest_seen)
        else:
            history, prefix = pl.DataFrame(), empty_prefix(with_phase_key=True)
        batch = Batch(
            batch_id=self._batch_ids,
            ticks=ticks,
            history=history,
            prefix=prefix,
            created_at=time.time(),
            max_row_id=max_row_id,
            completion=completion,
            features=SharedFeatures(history, prefix, tick_frame(ticks)),
        )
        metrics.BATCHES.inc({"reason": reason})
        metrics.BATCH_SIZE.observe({}, len(ticks))
        metrics.BATCH_WAIT.observe({}, waited)
        self._in_flight += 1
        await self._bus.publish(batch)
        newest = max(t.data_timestamp for t in ticks)
        assert self._confirm_send is not None
        await self._confirm_send.send((batch, newest))
        return batch

    async def _pass_skipped_rows(self) -> Batch:
        """Only skipped rows since the last batch: an empty batch, never published, carries
        the cursor past them in batch order (after every batch before it is stored);
        also the cursors of shards the poller newly covers."""
        self._batch_ids += 1
        self._batch_covered[self._batch_ids] = self._flushed_covered = self._covered
        prefix = empty_prefix(with_phase_key=True)
        batch = Batch(
            batch_id=self._batch_ids,
            ticks=(),
            history=pl.DataFrame(),
            prefix=prefix,
            created_at=time.time(),
            max_row_id=self._pending_max_id,
            completion=BatchCompletion(set()),
            features=SharedFeatures(pl.DataFrame(), prefix, tick_frame(())),
        )
        self._flushed_max_id = self._pending_max_id
        self._in_flight += 1
        assert self._confirm_send is not None
        await self._confirm_send.send((batch, None))
        return batch

    async def _load(
        self, ticks: tuple[Tick, ...], oldest_seen: dict[str, datetime]
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        started = time.perf_counter()
        rows = max(self._history_size, self._bus.history_rows())
        plan = self._history.plan(ticks, rows, oldest_seen)
        try:
            async with self._pool.acquire() as conn:
                fetched = await coin_metrics.load_history(
                    conn, plan.mints, plan.as_of, rows, tuple(BASE_COLUMNS), plan.after
                )
            history = self._history.merge(plan, fetched)
        except BaseException:
            self._history.clear()  # a failed read leaves nothing half-merged behind
            raise
        prefix = await self._prefix.prefix_for(history, self._bus.phase_keys(), rows)
        metrics.HISTORY_LOAD.observe({}, time.perf_counter() - started)
        return history, prefix

    async def _rows_before(
        self, mints: Sequence[str], boundaries: Sequence[datetime]
    ) -> pl.DataFrame:
        async with self._pool.acquire() as conn:
            return await coin_metrics.load_rows_before(conn, mints, boundaries)

    async def _confirm(
        self, batches: MemoryObjectReceiveStream[tuple[Batch, datetime | None]]
    ) -> None:
        """Once every predictor is done with a batch: store every model's predictions
        with the batch's webhook jobs (all items are in, so each coin tick is one job)
        in one transaction, several batches at once; then, in batch order, advance
        the durable cursor past the stored batches."""
        stored_send, stored_receive = anyio.create_memory_object_stream[
            tuple[Batch, datetime | None, anyio.Event]
        ](64)
        slots = anyio.Semaphore(STORES_IN_FLIGHT)
        # The store of the last batch with a model's caps or ignore windows: the next
        # such batch waits for it (they read what it stores; actors.scoring.store_limits).
        limited: anyio.Event | None = None
        async with batches, anyio.create_task_group() as tg:
            tg.start_soon(self._advance, stored_receive)
            async with stored_send:
                async for batch, newest in batches:
                    await batch.completion.wait()
                    self._in_flight -= 1
                    self._changed.set()
                    stored = anyio.Event()
                    await slots.acquire()
                    after = None
                    if any(limits_apply(r) for r, _ in batch.completion.scores):
                        after, limited = limited, stored
                    tg.start_soon(self._store, batch, newest, stored, slots, after)
                    await stored_send.send((batch, newest, stored))

    async def _store(
        self,
        batch: Batch,
        newest: datetime | None,
        stored: anyio.Event,
        slots: anyio.Semaphore,
        after: anyio.Event | None = None,
    ) -> None:
        """The batch's predictions and webhook jobs, in one transaction (once `after`, the
        store of the batch before it that it depends on, is done). A crash after it
        and before the cursor moved reads the batch again: its predictions exist, so
        nothing is inserted twice, and its jobs exist, so nothing is sent twice."""
        if after is not None:
            await after.wait()
        completion = batch.completion
        refused: set[TickKey] = set()
        if not batch.ticks:  # only skipped rows: nothing to store
            slots.release()
            stored.set()
            return
        try:
            queued = await self._store_ticks(
                batch, newest, completion.scores, completion.webhook_items, refused
            )
        finally:
            slots.release()
        if queued and self._on_jobs_queued is not None:
            self._on_jobs_queued()
        # Once per coin tick rather than per model and tick: every model's prediction
        # is committed now, and the tick's webhook can go out.
        now = time.time()
        for tick in batch.ticks if completion.expected else ():
            if (tick.coin_id, tick.data_timestamp) not in refused:
                metrics.PREDICTION_LAG.observe({}, max(now - tick.data_timestamp.timestamp(), 0.0))
        stored.set()

    async def _store_ticks(
        self,
        batch: Batch,
        newest: datetime | None,
        scores: Sequence[ModelScores],
        items: Sequence[WebhookItem],
        refused: set[TickKey],
    ) -> int:
        """Store these scores and items in one transaction; returns the jobs queued.

        When the database refuses it for good (`PERMANENT_ERRORS`: the same rows would
        fail again, so the batcher's restart would read the batch and fail forever),
        the batch's coin ticks are stored in halves (`storage.db.pool.store_in_halves`):
        every tick the database accepts is stored and announced once, a tick it
        refuses alone is skipped (added to `refused`), and the cursor moves on.
        """

        async def write(keys: Sequence[TickKey]) -> tuple[Written, int]:
            part = functools.partial(self._write, *restrict(scores, items, keys))
            return await _retrying(batch, part, "batch_store_failed")

        def skip(key: TickKey, error: Exception) -> None:
            refused.add(key)
            self._skip_refused(batch, key, *restrict(scores, items, [key]), error)

        try:
            # Only the whole batch's transaction may move the cursor past it, not a part.
            whole = functools.partial(self._write, scores, items, (batch, newest))
            results = [await _retrying(batch, whole, "batch_store_failed")]
        except PERMANENT_ERRORS as exc:
            keys = tick_keys(scores, items)
            if not keys:
                raise
            log.warning(
                "batch_store_refused",
                batch_id=batch.batch_id,
                ticks=len(keys),
                error=str(exc),
                sqlstate=getattr(exc, "sqlstate", None),
            )
            results = await store_in_halves(keys, exc, write, skip)
        queued = 0
        for written, jobs in results:
            written.record_metrics()
            queued += jobs
        return queued

    def _skip_refused(
        self,
        batch: Batch,
        key: TickKey,
        scores: Sequence[ModelScores],
        items: Sequence[WebhookItem],
        exc: Exception,
    ) -> None:
        """A coin tick the database refuses on its own: not stored, not announced."""
        coin_id, data_timestamp = key
        models = sorted({runtime.active_model_id for runtime, _ in scores})
        for model in models:
            metrics.TICKS_SKIPPED.inc({"model": str(model), "reason": STORE_FAILED})
        error = str(exc)
        log.error(
            "tick_store_failed",
            batch_id=batch.batch_id,
            coin_id=coin_id,
            data_timestamp=data_timestamp.isoformat(),
            models=models,
            # Models whose stored prediction of this tick was reported again (a batch
            # read again): its webhook of this tick is not sent.
            unsent_webhook_models=sorted({i.active_model_id for i in items}),
            error=error,
            sqlstate=getattr(exc, "sqlstate", None),
            reason=STORE_FAILED,
        )
        self._state.store_refused(coin_id, data_timestamp, models, error)

    async def _write(
        self,
        scores: Sequence[ModelScores],
        items: Sequence[WebhookItem],
        whole: tuple[Batch, datetime | None] | None = None,
    ) -> tuple[Written, int]:
        """Returns what was stored and how many of its jobs wait for a claim.

        The transaction runs to its end even when the batcher is cancelled (another of its
        tasks failed): cancelled half-way, its COMMIT could still land while the restarted
        batcher stores the same ticks again, and asyncpg would be left mid-operation on
        the connection. STORE_DEADLINE_SECONDS bounds the wait for a stuck database.
        """
        with anyio.CancelScope(shield=True), anyio.fail_after(STORE_DEADLINE_SECONDS):
            written = await self._write_once(scores, items, whole)
        return written

    async def _write_once(
        self,
        scores: Sequence[ModelScores],
        items: Sequence[WebhookItem],
        whole: tuple[Batch, datetime | None] | None = None,
    ) -> tuple[Written, int]:
        """`whole`: these are all of this batch's scores and items (with its newest tick
        time); then, if every batch before it has moved the cursor, the cursor moves past
        it in this transaction, saving `_advance` a transaction of its own."""
        handed: list[outbox.ClaimedJob] = []
        moved: int | None = None
        started = lease_seconds = 0.0
        async with self._pool.acquire() as conn, conn.transaction():
            if self._shards is not None:  # fencing: only ticks of shards still held
                scores, items = await fence(self._shards, conn, scores, items)
            written = await write_batch(
                conn, scores, default_url=self._default_url, known=self._targets
            )
            every = [*written.items, *items]
            jobs = tick_jobs(every)
            if jobs and self._handoff is not None:
                plan = self._handoff.room(jobs)
                lease_seconds = plan.lease_seconds
                started = time.monotonic()
                also = self._cursor_write(whole)
                queued, handed = await outbox.enqueue_leased(
                    conn,
                    jobs,
                    plan.leased,
                    lease_seconds=lease_seconds,
                    batch_keys=plan.batch_keys,
                    also=also,
                )
                if also is not None and whole is not None:
                    moved = whole[0].max_row_id
            else:
                queued = await outbox.enqueue(conn, jobs) if jobs else 0
            if queued < len(jobs):  # a tick's job existed: models it lacks follow up
                queued += await queue_follow_ups(conn, every)
            if moved is None and whole is not None and self._may_move(whole[0]):
                moved = await self._cursor_in(conn, *whole)
        self._targets.remember(written.learned)  # committed
        if moved is not None and whole is not None:
            self._batch_covered.pop(whole[0].batch_id, None)
            self._moved[whole[0].batch_id] = moved
            self._cursor_batch = whole[0].batch_id
        if handed and self._handoff is not None:  # committed: the dispatcher may send them
            snapshots = {s.key: s.json for job in jobs for s in job.snapshots}
            self._handoff.take(handed, snapshots, started + lease_seconds)
        return written, queued - len(handed)

    async def _advance(
        self, stored: MemoryObjectReceiveStream[tuple[Batch, datetime | None, anyio.Event]]
    ) -> None:
        """The cursor past each batch once it and every batch before it are stored."""
        async with stored:
            async for batch, newest, done in stored:
                await done.wait()
                position = self._moved.pop(batch.batch_id, None)
                if position is None:  # not moved by its storing transaction
                    position = await _retrying(
                        batch, functools.partial(self._move_cursor, batch, newest), "cursor_failed"
                    )
                    self._cursor_batch = batch.batch_id
                self.cursor_position = position
                metrics.INTAKE_CURSOR.set({}, float(self.cursor_position))

    async def _move_cursor(self, batch: Batch, newest: datetime | None) -> int:
        async with self._pool.acquire() as conn:
            position = await self._cursor_in(conn, batch, newest)
        self._batch_covered.pop(batch.batch_id, None)
        return position

    def _may_move(self, batch: Batch) -> bool:
        """The batches before it are stored and confirmed (their cursor moves are
        committed), so the cursor may pass this one in its storing transaction; only
        that task can move it now (`_advance` waits for this batch's store)."""
        return self._cursor_batch == batch.batch_id - 1

    def _cursor_write(self, whole: tuple[Batch, datetime | None] | None) -> outbox.AlsoWrite | None:
        """`_cursor_in` as a part of the statement that queues the batch's jobs (a round
        trip fewer per batch), when the cursor may move now and shard cursors move."""
        if whole is None or self._shards is None or not self._may_move(whole[0]):
            return None
        batch, newest = whole
        covered = self._batch_covered.get(batch.batch_id)
        if not covered:
            return None
        return outbox.AlsoWrite(
            shard_leases.advance_cursors_sql,
            shard_leases.advance_cursors_args(
                self._shards.holder, covered, batch.max_row_id, newest
            ),
        )

    async def _cursor_in(
        self, conn: asyncpg.Connection, batch: Batch, newest: datetime | None
    ) -> int:
        """Move the cursor past `batch` on `conn` (every batch before it is stored); the
        caller forgets the batch's shards once this is committed."""
        if self._shards is None:
            return await cursor.advance(conn, batch.max_row_id, newest, self._cursor_name)
        covered = self._batch_covered.get(batch.batch_id)
        if covered:
            # Fenced too: a shard lost meanwhile keeps its cursor for its new holder.
            await shard_leases.advance_cursors(
                conn, self._shards.holder, covered, batch.max_row_id, newest
            )
        return batch.max_row_id


async def _retrying(batch: Batch, attempt_once: Callable[[], Awaitable[T]], event: str) -> T:
    """Tried again on a transient database error (the batch is in memory, every statement
    is idempotent); then the error stops the batcher, whose restart reads the batch again.
    A `PERMANENT_ERRORS` error is raised at once: trying the same rows again cannot help."""
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            return await attempt_once()
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
            log.warning(event, batch_id=batch.batch_id, attempt=attempt, error=repr(exc))
            if attempt == COMMIT_ATTEMPTS or isinstance(exc, PERMANENT_ERRORS):
                raise
            await anyio.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")
