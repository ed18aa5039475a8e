"""A batch's stream predictions of every model, stored with one statement.

Predictors score and hand their results over with their acknowledgement; once
every model is done, the batcher writes them here, in the transaction that
queues the batch's webhook jobs and moves the intake cursor, so a batch is
stored, announced and confirmed together or not at all. Ten models used to
mean ten INSERTs and commits per batch, each sending the ticks' columns again
and building a row object per prediction; now the ticks and the models are
sent once and a prediction is four numbers and a tag.

Models with caps or ignore windows are stored here too: their limits are
applied in the same transaction (`actors.scoring.store_limits`), so a coin tick's row
is written once with every model's result.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import NamedTuple

import asyncpg

from actors.runtime import metrics
from actors.runtime.messages import Tick
from actors.scoring import store_limits
from actors.scoring.model_runtime import ModelRuntime, Scored
from actors.shards.shard_set import ShardSet
from actors.webhooks.payload import (
    ReportedPrediction,
    WebhookItem,
    WebhookModel,
    column_items,
    iso_timestamp,
    target_url,
    webhook_items,
)
from storage.predictions import writes as predictions
from storage.predictions.writes import BatchRows, ModelTarget, TargetIds, tick_position


class Written(NamedTuple):
    """What `write_batch` stored: the webhook items, and counts for the metrics, which
    the caller records once the transaction committed (a retried one counts once)."""

    items: list[WebhookItem]
    stored: Counter[tuple[str, str]]  # (model, tag) -> predictions stored
    skipped: Counter[tuple[str, str]]  # (model, reason) -> predictions not stored
    # Target ids looked up, for the caller's `TargetIds` once the transaction committed.
    learned: tuple[tuple[ModelTarget, int], ...] = ()

    def record_metrics(self) -> None:
        for (model, tag), count in self.stored.items():
            metrics.PREDICTIONS.add({"model": model, "tag": tag}, count)
        for (model, reason), count in self.skipped.items():
            if count:
                metrics.TICKS_SKIPPED.add({"model": model, "reason": reason}, count)


class ModelScores(NamedTuple):
    """One model's scores of a batch, as its predictor hands them to the batcher."""

    runtime: ModelRuntime
    scored: Scored


TickKey = tuple[str, datetime]  # (coin_id, data_timestamp)
# The TICKS_SKIPPED reason of a tick the database refused for good (the batcher's
# store and the predictor's own both isolate and skip it).
STORE_FAILED = "store_failed"


def tick_keys(scores: Sequence[ModelScores], items: Sequence[WebhookItem]) -> list[TickKey]:
    """The coin ticks a store of these scores and items writes, each once, in batch order."""
    keys = [(t.coin_id, t.data_timestamp) for _, scored in scores for t in scored.ticks]
    keys += [(i.coin_id, i.data_timestamp) for i in items]
    return list(dict.fromkeys(keys))


def restrict(
    scores: Sequence[ModelScores], items: Sequence[WebhookItem], keys: Collection[TickKey]
) -> tuple[list[ModelScores], list[WebhookItem]]:
    """The scores and items of these coin ticks only: part of a batch the database refused,
    stored on its own to find the ticks it refuses (see `actors.scoring.batcher`)."""
    wanted = set(keys)
    parts = []
    for runtime, scored in scores:
        picks = [k for k, t in enumerate(scored.ticks) if (t.coin_id, t.data_timestamp) in wanted]
        if picks:
            part = Scored(
                [scored.ticks[k] for k in picks],
                scored.probabilities[picks],
                [scored.snapshots[k] for k in picks],
                [],  # the predictor counted these already
            )
            parts.append(ModelScores(runtime, part))
    return parts, [i for i in items if (i.coin_id, i.data_timestamp) in wanted]


async def fence(
    shards: ShardSet,
    conn: asyncpg.Connection,
    scores: Sequence[ModelScores],
    items: Sequence[WebhookItem],
) -> tuple[Sequence[ModelScores], Sequence[WebhookItem]]:
    """Inside the storing transaction: the part of a batch's scores and items this
    process may still commit (ticks of shards it holds, see `actors.shards.shard_set`)."""
    keys = tick_keys(scores, items)
    kept = await shards.fence_coins(conn, [coin for coin, _ in keys])
    if len(kept) == len({coin for coin, _ in keys}):
        return scores, items
    return restrict(scores, items, [k for k in keys if k[0] in kept])


def batch_rows(scores: Sequence[ModelScores]) -> BatchRows:
    """The columns of one `insert_batch`: each tick once, each model once; the
    predictions of a model are consecutive, in the order of `scores`."""
    rows = BatchRows()
    where: dict[tuple[str, datetime], int] = {}
    # Most models score the same ticks as the one before: their positions are reused.
    previous: list[Tick] | None = None
    previous_positions: list[int] = []
    for index, (runtime, scored) in enumerate(scores):
        target = runtime.target
        rows.models.append(target)
        if scored.ticks == previous:
            positions = previous_positions
        else:
            positions = [
                tick_position(
                    rows, where, tick.coin_id, tick.data_timestamp, tick.phase_id, close, cap
                )
                for tick, (close, cap) in zip(scored.ticks, scored.snapshots, strict=True)
            ]
            previous, previous_positions = scored.ticks, positions
        probabilities, tags = scored.tagged(target.alert_threshold)
        rows.model_index.extend([index] * len(positions))
        rows.tick_index.extend(positions)
        rows.probabilities.extend(probabilities)
        rows.predictions.extend(scored.predictions())
        rows.tags.extend(tags)
    return rows


async def write_batch(
    conn: asyncpg.Connection,
    scores: Sequence[ModelScores],
    *,
    default_url: str | None,
    known: TargetIds | None = None,
) -> Written:
    """Store the models' predictions; return the webhook items of the stored ones.

    A prediction that existed already (the tick was processed before and its
    first run stopped before the cursor moved, or an older version stored it
    alone) is reported with its stored values: the tick's job key keeps a tick
    that was queued already from being queued twice.
    """
    limited = await store_limits.apply(conn, scores)
    scores = [ModelScores(r, s) for (r, _), s in zip(scores, limited.kept, strict=True) if s.ticks]
    rows = batch_rows(scores)
    outcome = await predictions.insert_batch(conn, rows, known)
    existing, gone = set(outcome.existing), set(outcome.model_gone)
    written = Written([], Counter(), limited.skipped, outcome.learned)
    items = written.items
    ticks: list[tuple[str, datetime, str]] | None = None
    start = 0
    for runtime, scored in scores:
        stop = start + len(scored.ticks)
        positions = range(start, stop)
        start = stop
        key = str(runtime.active_model_id)
        if existing or gone:
            fresh: Sequence[int] = [k for k in positions if k not in existing and k not in gone]
        else:
            fresh = positions
        written.stored.update((key, rows.tags[k]) for k in fresh)
        before = [scored.ticks[k - positions.start] for k in positions if k in existing]
        written.skipped[(key, "already_predicted")] += len(before)
        written.skipped[(key, "model_removed")] += sum(1 for k in positions if k in gone)
        if runtime.active_model_id in limited.windowed:
            stored = [(rows.tick_index[k], rows.tags[k]) for k in fresh]
            await store_limits.record_windows(
                conn,
                runtime,
                [(rows.coin_ids[i], rows.data_timestamps[i], tag) for i, tag in stored],
            )
        model = runtime.webhook
        if not model.n8n_enabled or not target_url(model, default_url):
            continue
        if ticks is None:
            ticks = tick_texts(rows)
        items += fresh_items(rows, ticks, model, fresh, default_url=default_url)
        if before:
            items += await stored_items(conn, model, before, default_url=default_url)
    for runtime, dropped in limited.dropped:
        model = runtime.webhook
        if model.n8n_enabled and target_url(model, default_url):
            items += await stored_items(conn, model, dropped, default_url=default_url)
    return written


def tick_texts(rows: BatchRows) -> list[tuple[str, datetime, str]]:
    """Each tick of the rows as (coin_id, data_timestamp, its ISO text), for `fresh_items`."""
    return [
        (coin, at, iso_timestamp(at))
        for coin, at in zip(rows.coin_ids, rows.data_timestamps, strict=True)
    ]


def fresh_items(
    rows: BatchRows,
    ticks: Sequence[tuple[str, datetime, str]],
    model: WebhookModel,
    positions: Sequence[int],
    *,
    default_url: str | None,
) -> list[WebhookItem]:
    """Webhook items of the model's predictions at these positions of the rows (the
    ones this batch stored), from the rows' columns (`tick_texts(rows)` as `ticks`)."""
    if isinstance(positions, range) and positions.step == 1:
        part = slice(positions.start, positions.stop)
        return column_items(
            model,
            [ticks[i] for i in rows.tick_index[part]],
            rows.predictions[part],
            rows.probabilities[part],
            rows.tags[part],
            default_url=default_url,
        )
    return column_items(
        model,
        [ticks[rows.tick_index[k]] for k in positions],
        [rows.predictions[k] for k in positions],
        [rows.probabilities[k] for k in positions],
        [rows.tags[k] for k in positions],
        default_url=default_url,
    )


async def stored_items(
    conn: asyncpg.Connection, model: WebhookModel, ticks: Sequence[Tick], *, default_url: str | None
) -> list[WebhookItem]:
    """Webhook items of the model's stored stream predictions of these ticks."""
    reports = await predictions.stored_stream_reports(
        conn,
        model.active_model_id,
        [t.coin_id for t in ticks],
        [t.data_timestamp for t in ticks],
    )
    return webhook_items(model, [ReportedPrediction(*r) for r in reports], default_url=default_url)
