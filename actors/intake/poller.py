"""Read new coin_metrics rows after the durable cursor, in id order, in pages.

Runs on every wake-up (listener), on a timer (the safety net when
notifications are lost) and at start-up (catch-up after downtime, bounded by
CATCHUP_MAX_AGE_SECONDS so a first start does not replay months).

Rows can commit out of id order: a transaction that took id 100 may commit
after one that took id 101, so a reader that only asks for "id > last seen"
skips 100 forever. The poller therefore remembers the gaps it has seen (ids
below its position that were not there yet) for CURSOR_OVERLAP_ROWS ids and
asks for them again with every read; a gap that never fills (a rolled-back
insert) is forgotten once it falls out of that window. After a restart it
re-reads the overlap behind the durable cursor once.

A row intake cannot use (see `storage.intake.coin_metrics`: a timestamp out of range or
more than INTAKE_MAX_FUTURE_SECONDS ahead, a price that is not a positive finite
number) is skipped here, counted in pp_ticks_skipped_total{reason} and logged
once with its coin, timestamp and reason; the position moves past it like past
any other row, so one bad row never holds up the others. Every page tells the
batcher its highest id, so the durable cursor moves past skipped rows too (even
when no good row follows them).

With coin shards (`actors.shards.shard_set`; the service always uses them) the poller
reads only the rows of the shards it holds: one scan in id order as above, where
rows of other shards count as ids but are not emitted. A shard it newly holds
(at start, or taken over from another holder) first catches up from its own
durable cursor minus the overlap up to the scan's position; from then on the
pages it sends say that shard is covered (`TickPage.covered`), which is when the
batcher may move that shard's cursor.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import anyio
import asyncpg
import structlog
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.runtime import metrics
from actors.runtime.messages import Tick, TickPage, Wakeup
from actors.runtime.state import ServiceState
from actors.shards.shard_set import ShardSet
from storage.config import Settings
from storage.intake import coin_metrics, cursor, shard_leases

log = structlog.get_logger(__name__)


class Poller:
    def __init__(
        self,
        pool: asyncpg.Pool,
        wakeups: MemoryObjectReceiveStream[Wakeup],
        pages: MemoryObjectSendStream[TickPage],
        state: ServiceState,
        *,
        interval: float,
        page_size: int,
        overlap: int,
        max_age_seconds: float,
        max_future_seconds: float = 300.0,
        cursor_name: str = cursor.DEFAULT_NAME,
        shards: ShardSet | None = None,
    ) -> None:
        self._pool = pool
        self._shards = shards
        # Shards whose rows up to `position` are all emitted -> their lease generation.
        self._covered: dict[int, int] = {}
        self._wakeups = wakeups
        self._pages = pages
        self._state = state
        self._interval = interval
        self._page_size = page_size
        self._overlap = overlap
        self._max_age = max_age_seconds
        self._max_future = timedelta(seconds=max_future_seconds)
        self._cursor_name = cursor_name
        self._stopping = False
        self.position = 0  # highest id emitted
        self.floor = 0  # never read at or below this id (the catch-up bound)
        self._gaps: set[int] = set()
        self._resume_low: int | None = None
        self._rewind = False

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        pool: asyncpg.Pool,
        wakeups: MemoryObjectReceiveStream[Wakeup],
        pages: MemoryObjectSendStream[TickPage],
        state: ServiceState,
        shards: ShardSet | None = None,
    ) -> Poller:
        return cls(
            pool,
            wakeups,
            pages,
            state,
            interval=settings.polling_interval_seconds,
            page_size=settings.poll_page_size,
            overlap=settings.cursor_overlap_rows,
            max_age_seconds=settings.catchup_max_age_seconds,
            max_future_seconds=settings.intake_max_future_seconds,
            shards=shards,
        )

    def request_stop(self) -> None:
        self._stopping = True

    def rewind(self) -> None:
        """Re-read from the durable cursor at the next poll.

        Called when the batcher restarted after a crash: the ticks it held were
        emitted (so the seen-set would skip them) but never processed.
        """
        self._rewind = True

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self._start_position()
        task_status.started()
        trigger = "startup"
        while not self._stopping:
            await self.poll(trigger)
            trigger = "timer"
            with anyio.move_on_after(self._interval):
                while not self._stopping:
                    with anyio.move_on_after(0.25):
                        wakeup = await self._wakeups.receive()
                        trigger = wakeup.reason
                        break

    async def _start_position(self) -> None:
        """Resume at the durable cursor (minus the overlap), never before the age bound."""
        async with self._pool.acquire() as conn:
            bound = datetime.now(UTC) - timedelta(seconds=self._max_age)
            self.floor = await coin_metrics.last_id_before(conn, bound)
            if self._shards is not None:
                # Each held shard resumes from its own cursor (`_follow_shards`).
                self._covered = {}
                log.info("poller_start", floor=self.floor, sharded=True)
                return
            saved = await cursor.load(conn, self._cursor_name)
        resume = saved.last_id if saved is not None else 0
        skipped = max(0, self.floor - resume)
        self.position = max(resume, self.floor)
        # After a restart re-read the overlap too: rows below the cursor may have
        # committed after it was written. Re-processing is idempotent.
        self._resume_low = max(self.floor, resume - self._overlap)
        log.info(
            "poller_start",
            cursor=resume,
            floor=self.floor,
            position=self.position,
            skipped_as_too_old=skipped,
        )
        metrics.INTAKE_CURSOR.set({}, float(resume))

    async def poll(self, trigger: str) -> int:
        """Read until no new rows are left; return the number of rows emitted."""
        if self._rewind:
            self._rewind = False
            self._gaps.clear()
            await self._start_position()
        metrics.INTAKE_POLLS.inc({"trigger": trigger})
        self._state.last_poll_at = time.time()
        emitted = 0
        if self._shards is not None:
            emitted += await self._follow_shards()
            if not self._covered:
                return emitted  # no shard held: nothing of ours to read
        while True:
            resuming = self._resume_low is not None
            after = self._resume_low if self._resume_low is not None else self.position
            latest = datetime.now(UTC) + self._max_future
            async with self._pool.acquire() as conn:
                rows = await coin_metrics.read_ticks(
                    conn,
                    after,
                    sorted(self._gaps),
                    self._page_size,
                    latest,
                    shards=None if self._shards is None else sorted(self._covered),
                    shard_count=1 if self._shards is None else self._shards.shard_count,
                )
            if not rows:
                self._resume_low = None
                break
            ticks = self._ticks(rows)
            ids = [r.id for r in rows]
            await self._pages.send(TickPage(ticks, max(ids), self._covered_now()))
            self._track_gaps(after, ids)
            if resuming:
                # The re-read after a restart continues page by page up to the position.
                full = len(rows) == self._page_size and max(ids) < self.position
                self._resume_low = max(ids) if full else None
            emitted += len(ticks)
            metrics.INTAKE_ROWS.add({}, len(rows))
            if len(rows) < self._page_size:
                break
        self._prune()
        return emitted

    def _ticks(
        self, rows: list[coin_metrics.AnyRow], low: dict[int, int] | None = None
    ) -> tuple[Tick, ...]:
        """The rows to emit as ticks; unusable ones counted. With `low` (a catch-up: shard
        -> the id its re-read starts after), a row at or below its shard's low is not
        emitted: that shard's cursor says it is done."""
        now = time.time()
        ticks = []
        for r in rows:
            if isinstance(r, coin_metrics.ForeignRow):
                continue
            shards = self._shards
            if low is not None and shards is not None and r.id <= low[shards.shard_of(r.mint)]:
                continue
            if isinstance(r, coin_metrics.TickRow):
                ticks.append(Tick(r.id, r.mint, r.timestamp, r.phase_id, now))
            else:
                self._skip(r)
        return tuple(ticks)

    def _covered_now(self) -> dict[int, int] | None:
        return None if self._shards is None else dict(self._covered)

    async def _follow_shards(self) -> int:
        """Drop the shards no longer held; catch up the newly held ones from their own
        cursors up to the scan's position, then count them as covered."""
        assert self._shards is not None
        held = dict(self._shards.held)
        for shard, generation in list(self._covered.items()):
            if held.get(shard) != generation:
                del self._covered[shard]  # lost, released, or held again anew
        new = {s: g for s, g in held.items() if self._covered.get(s) != g}
        if not new:
            return 0
        async with self._pool.acquire() as conn:
            cursors = await shard_leases.load_cursors(conn, new)
        # The age bound (CATCHUP_MAX_AGE_SECONDS) holds for shards nobody worked on since
        # before this process started, as after downtime; a shard handed over by a live
        # holder (or one killed after this process started) resumes at its cursor.
        orphaned = self._shards.orphaned
        bounded = {s: max(c, self.floor) if s in orphaned else c for s, c in cursors.items()}
        low = {
            s: max(self.floor, c - self._overlap) if s in orphaned else max(c - self._overlap, 0)
            for s, c in cursors.items()
        }
        if not self._covered:
            # No scan running: it starts where the newest of these cursors is.
            self.position = max(bounded.values())
            self._gaps.clear()
        emitted = await self._catch_up(new, low)
        self._covered.update(new)
        log.info(
            "shards_followed",
            new=sorted(new),
            covered=len(self._covered),
            position=self.position,
            caught_up=emitted,
        )
        # Every row of the new shards up to the position is emitted: the batcher may
        # move their cursors with the batch that carries this page.
        await self._pages.send(TickPage((), self.position, self._covered_now()))
        return emitted

    async def _catch_up(self, new: dict[int, int], low: dict[int, int]) -> int:
        """Emit the rows of the `new` shards above their `low` up to the position."""
        assert self._shards is not None
        after, upto, emitted = min(low.values()), self.position, 0
        while after < upto:
            latest = datetime.now(UTC) + self._max_future
            async with self._pool.acquire() as conn:
                rows = await coin_metrics.read_shard_range(
                    conn,
                    after,
                    upto,
                    sorted(new),
                    self._shards.shard_count,
                    self._page_size,
                    latest,
                )
            if not rows:
                break
            ticks = self._ticks(rows, low)
            ids = [r.id for r in rows]
            await self._pages.send(TickPage(ticks, max(ids), self._covered_now()))
            self._track_gaps(after, ids)
            metrics.INTAKE_ROWS.add({}, len(rows))
            emitted += len(ticks)
            after = max(ids)
            if len(rows) < self._page_size:
                break
        return emitted

    def _skip(self, row: coin_metrics.UnusableRow) -> None:
        """A row intake cannot use: counted by reason, named in one log line."""
        metrics.TICKS_SKIPPED.inc({"reason": row.reason})
        self._state.tick_skipped(row.id, row.mint, row.timestamp, row.reason)
        log.warning(
            "tick_skipped",
            row_id=row.id,
            coin_id=row.mint,
            data_timestamp=row.timestamp,
            reason=row.reason,
        )

    def _track_gaps(self, after: int, ids: list[int]) -> None:
        """Forget filled gaps; remember the ids above `after` this read did not return."""
        returned = set(ids)
        self._gaps -= returned
        newest = max(ids)
        # Only ids inside the overlap window can still be worth asking for.
        start = max(after + 1, newest - self._overlap + 1)
        self._gaps.update(i for i in range(start, newest) if i not in returned)
        self.position = max(self.position, newest)

    def _prune(self) -> None:
        low = self.position - self._overlap
        self._gaps = {i for i in self._gaps if i > low}
