"""One actor per active model: a batch in, that model's predictions out.

Per batch: filters (phases, coin whitelist, ignore windows, caps of open
predictions), the feature matrix and `predict_proba` for all eligible coins at
once, then the acknowledgement. It hands the model's scores to the batcher,
which stores every model's predictions of the batch with one statement, in the
transaction that queues the webhook jobs and moves the intake cursor
(`actors.scoring.batch_writer`); the caps and ignore windows of a model that has them
are applied there too, in that transaction (`actors.scoring.store_limits`). The
windows are also checked here first, so a coin they cover is not scored. A new
model object or new settings (hot reload) are swapped in between batches,
never during one.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence

import anyio
import asyncpg
import structlog
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream

from actors.runtime import metrics
from actors.runtime.messages import Tick
from actors.runtime.offload import run_cpu
from actors.runtime.state import ServiceState
from actors.scoring.batch import Batch
from actors.scoring.batch_bus import BatchBus
from actors.scoring.batch_writer import STORE_FAILED, ModelScores, stored_items
from actors.scoring.model_runtime import ModelRuntime, Scored, score
from actors.scoring.store_limits import IGNORE_WINDOW, Limits, keep_under_caps, limits_apply
from actors.webhooks.payload import WebhookItem, target_url, webhook_jobs
from storage.db.pool import PERMANENT_ERRORS, store_in_halves
from storage.outbox import jobs as outbox
from storage.predictions import manual as prediction_store
from storage.predictions import scan_state
from storage.predictions import writes as predictions
from storage.predictions.writes import NewPrediction, StoredPrediction

log = structlog.get_logger(__name__)

# What a limited model's manual store returns: the rows its caps kept, the stored rows,
# the ones this call inserted, the webhook jobs queued.
_Checked = tuple[list[NewPrediction], list[StoredPrediction], list[NewPrediction], int]

BATCH_ATTEMPTS = 3


class Predictor:
    def __init__(
        self,
        runtime: ModelRuntime,
        bus: BatchBus,
        pool: asyncpg.Pool,
        *,
        default_webhook_url: str | None,
        poke_webhooks: Callable[[], None] | None = None,
        state: ServiceState | None = None,
    ) -> None:
        self._runtime = runtime
        self._next: ModelRuntime | None = None
        self._bus = bus
        self._pool = pool
        self._default_url = default_webhook_url
        self._poke = poke_webhooks
        self._state = state
        self._stopping = False
        self._items: list[WebhookItem] = []  # webhook items of the current batch
        self._scores: ModelScores | None = None  # what the batcher stores for the batch
        self.key = runtime.active_model_id
        self._log = log.bind(active_model_id=self.key, model=runtime.name)

    @property
    def runtime(self) -> ModelRuntime:
        return self._next or self._runtime

    def swap(self, runtime: ModelRuntime) -> None:
        """Use `runtime` from the next batch on (hot reload)."""
        self._next = runtime
        self._bus.update(
            self.key, phase_key=runtime.phase_key, history_rows=runtime.spec.history_rows
        )

    def request_stop(self) -> None:
        """Finish the batches already handed over, then return."""
        self._stopping = True
        # A receive waiting for the next batch gets the ones buffered, then the end.
        self._bus.end_stream(self.key)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        runtime = self.runtime
        receive = self._bus.subscribe(
            self.key, phase_key=runtime.phase_key, history_rows=runtime.spec.history_rows
        )
        metrics.ACTIVE_MODELS.set({}, float(len(self._bus.subscriber_ids)))
        if self._stopping:  # asked to stop before it subscribed
            self._bus.end_stream(self.key)
        task_status.started()
        try:
            while True:
                batch = await self._next_batch(receive)
                if batch is None:
                    return
                try:
                    await self._process_with_retry(batch)
                finally:
                    self._ack(batch)
        finally:
            # Acknowledges whatever was still owed, so the cursor never waits on us.
            self._bus.unsubscribe(self.key)
            receive.close()
            metrics.ACTIVE_MODELS.set({}, float(len(self._bus.subscriber_ids)))

    def _ack(self, batch: Batch) -> None:
        """Acknowledge the batch, handing over its scores or webhook items."""
        batch.completion.webhook_items.extend(self._items)
        if self._scores is not None:
            batch.completion.scores.append(self._scores)
        self._items, self._scores = [], None
        batch.completion.ack(self.key)

    async def _next_batch(self, receive: MemoryObjectReceiveStream[Batch]) -> Batch | None:
        """The next batch; None once the stream ended (`request_stop`, replaced). No
        timeout to poll a stop flag: a cancel scope per batch and model cost the loop
        more than the rest of a predictor's wake-up."""
        try:
            return await receive.receive()
        except anyio.EndOfStream:
            return None

    async def _process_with_retry(self, batch: Batch) -> None:
        for attempt in range(1, BATCH_ATTEMPTS + 1):
            self._items, self._scores = [], None  # a retry rebuilds what the failed one had
            try:
                await self.process(batch)
                return
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
                # Transient (a dropped connection, a failover): the insert is
                # idempotent, so trying the whole batch again is safe.
                self._log.warning(
                    "batch_failed", batch_id=batch.batch_id, attempt=attempt, error=repr(exc)
                )
                if attempt == BATCH_ATTEMPTS:
                    break
                await anyio.sleep(0.2 * 2**attempt)
            except Exception:
                self._log.exception("batch_failed_permanently", batch_id=batch.batch_id)
                break
        metrics.TICKS_SKIPPED.add(
            {"model": str(self.key), "reason": "batch_failed"}, len(batch.ticks)
        )

    async def process(self, batch: Batch) -> None:
        if self._next is not None:
            self._runtime, self._next = self._next, None
            self._log = log.bind(active_model_id=self.key, model=self._runtime.name)
        runtime = self._runtime
        started = time.perf_counter()
        ticks = self._eligible(runtime, batch.ticks)
        hidden: list[Tick] = []
        if ticks and Limits.of(runtime.row).windowed:
            # The windows committed so far (the batcher checks again when it stores,
            # after the batches before this one): a coin they cover is not scored.
            async with self._pool.acquire() as conn:
                ignored = await scan_state.ignored_until(conn, self.key, [t.coin_id for t in ticks])
            if ignored:
                kept = [
                    t for t in ticks if t.data_timestamp >= ignored.get(t.coin_id, t.data_timestamp)
                ]
                hidden = [t for t in ticks if t not in kept]
                self._skip(IGNORE_WINDOW, len(hidden))
                ticks = kept
        if ticks:
            rows = await batch.features.get(runtime.spec, runtime.phase_key)
            scored = await run_cpu(len(ticks), score, runtime, ticks, rows)
            for tick, reason in scored.skipped:
                self._skip(reason.replace(" ", "_"), 1)
                # Data this model cannot use (never a filter): named once per tick.
                self._log.info(
                    "tick_skipped",
                    coin_id=tick.coin_id,
                    data_timestamp=tick.data_timestamp.isoformat(),
                    reason=reason.replace(" ", "_"),
                )
            if scored.ticks:
                self._scores = ModelScores(runtime, scored)
        if hidden:
            # The first run of this batch may have stored them and recorded the window.
            await self._report_stored_before(runtime, hidden)
        metrics.PREDICT_SECONDS.observe({"model": str(self.key)}, time.perf_counter() - started)

    async def _report_stored_before(self, runtime: ModelRuntime, hidden: list[Tick]) -> None:
        """Webhook items for the ticks an ignore window hid that the model had predicted.

        Normally none: this is a batch processed again after its first run
        committed this model's predictions but not the cursor move (a crash, a
        stop). Those predictions were never sent, because jobs are queued with
        the cursor move; the tick's idempotency key drops the job if it was
        queued after all.
        """
        if not runtime.webhook.n8n_enabled or not target_url(runtime.webhook, self._default_url):
            return
        async with self._pool.acquire() as conn:
            items = await stored_items(conn, runtime.webhook, hidden, default_url=self._default_url)
        self._items.extend(items)

    def _eligible(self, runtime: ModelRuntime, ticks: tuple[Tick, ...]) -> Sequence[Tick]:
        """The ticks the model's phases and coin whitelist let through. Without either,
        the batch's own tuple: models scoring the same object share its feature rows'
        lookup (`features.matrix.TickRows.found`)."""
        phases = runtime.phases
        row = runtime.row
        whitelist = set(row["coin_whitelist"]) if row["coin_filter_mode"] == "whitelist" else None
        if not phases and whitelist is None:
            return ticks
        kept = []
        for tick in ticks:
            if phases and tick.phase_id not in phases:
                self._skip("phase", 1)
            elif whitelist is not None and tick.coin_id not in whitelist:
                self._skip("not_whitelisted", 1)
            else:
                kept.append(tick)
        return kept

    async def store_manual(self, runtime: ModelRuntime, scored: Scored) -> list[StoredPrediction]:
        """Insert this model's manual predictions with their webhook jobs (and, for a
        model with caps or ignore windows, its scan state) atomically. Stream
        predictions go to the batcher with the acknowledgement."""
        probabilities, tags = scored.tagged(float(runtime.row["alert_threshold"]))
        rows = runtime.new_predictions(
            scored.ticks, probabilities, tags, scored.snapshots, "manual"
        )
        if limits_apply(runtime):
            rows, stored, fresh, queued = await self._store_isolating(runtime, rows)
        else:
            jobs = webhook_jobs(runtime.webhook, rows, default_url=self._default_url)
            async with self._pool.acquire() as conn:
                stored, queued = await prediction_store.insert_with_jobs(conn, rows, jobs)
            fresh = _fresh(rows, stored)
        for tag, count in Counter(r.tag for r in fresh).items():
            metrics.PREDICTIONS.add({"model": str(self.key), "tag": tag}, count)
        now = time.time()
        for r in fresh:
            metrics.PREDICTION_LAG.observe({}, max(now - r.data_timestamp.timestamp(), 0.0))
        if len(fresh) < len(rows):
            self._skip("already_predicted", len(rows) - len(fresh))
        if queued and self._poke is not None:
            # Not part of a batch: due now, wake the dispatcher.
            self._poke()
        return stored

    async def _store_isolating(self, runtime: ModelRuntime, rows: list[NewPrediction]) -> _Checked:
        """`_store_checked`, and when the database refuses the rows for good
        (PERMANENT_ERRORS: the same rows would fail on every retry), the rows in halves
        as the batcher does (`storage.db.pool.store_in_halves`): every tick it accepts is
        stored once, a tick it refuses alone is skipped and logged."""

        async def store(part: Sequence[NewPrediction]) -> _Checked:
            return await self._store_checked(runtime, list(part))

        try:
            results = [await store(rows)]
        except PERMANENT_ERRORS as exc:
            results = await store_in_halves(rows, exc, store, self._skip_refused)
        kept: list[NewPrediction] = []
        stored: list[StoredPrediction] = []
        fresh: list[NewPrediction] = []
        for k, st, f, _ in results:
            kept += k
            stored += st
            fresh += f
        return kept, stored, fresh, sum(q for *_, q in results)

    def _skip_refused(self, row: NewPrediction, error: Exception) -> None:
        """A tick the database refuses on its own: not stored, not announced."""
        self._skip(STORE_FAILED, 1)
        self._log.error(
            "tick_store_failed",
            coin_id=row.coin_id,
            data_timestamp=row.data_timestamp.isoformat(),
            error=str(error),
            sqlstate=getattr(error, "sqlstate", None),
            reason=STORE_FAILED,
        )
        if self._state is not None:
            self._state.store_refused(row.coin_id, row.data_timestamp, [self.key], str(error))

    async def _store_checked(self, runtime: ModelRuntime, rows: list[NewPrediction]) -> _Checked:
        """With caps or ignore windows: read, insert, record and queue the webhook jobs in
        one transaction. Returns the rows kept by the caps, the stored ones, the new ones,
        jobs queued."""
        limits = Limits.of(runtime.row)
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await self._apply_caps(conn, limits, rows)
            stored = await predictions.insert_predictions(conn, rows)
            fresh = _fresh(rows, stored)
            if limits.windowed:
                scans = [limits.scan(r.coin_id, r.tag, r.data_timestamp) for r in fresh]
                await scan_state.record(conn, self.key, scans)
            jobs = webhook_jobs(runtime.webhook, fresh, default_url=self._default_url)
            queued = await outbox.enqueue(conn, jobs)
        return rows, stored, fresh, queued

    async def _apply_caps(
        self, conn: asyncpg.Connection, limits: Limits, rows: list[NewPrediction]
    ) -> list[NewPrediction]:
        """Drop predictions whose coin already has the maximum of open ones with that tag."""
        if not rows or not limits.capped:
            return rows
        counts = await predictions.open_counts(conn, self.key, [r.coin_id for r in rows])
        verdicts = keep_under_caps(limits.caps, counts, [(r.coin_id, r.tag) for r in rows])
        for reason in verdicts:
            if reason is not None:
                self._skip(reason, 1)
        return [r for r, reason in zip(rows, verdicts, strict=True) if reason is None]

    def _skip(self, reason: str, count: int) -> None:
        if count:
            metrics.TICKS_SKIPPED.add({"model": str(self.key), "reason": reason}, count)


def _fresh(rows: list[NewPrediction], stored: list[StoredPrediction]) -> list[NewPrediction]:
    """The rows this call inserted (the others were predicted before)."""
    if len(stored) == len(rows):
        return rows
    new = {(s.coin_id, s.data_timestamp) for s in stored}
    return [r for r in rows if (r.coin_id, r.data_timestamp) in new]
