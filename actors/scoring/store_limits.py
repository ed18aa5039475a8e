"""Caps of open predictions and ignore windows, applied inside the storing transaction.

A model with caps (at most N open predictions per coin and tag) or ignore
windows (after a result, skip the coin for N seconds of data time) depends on
what it stored before. The batcher applies them in the transaction that stores
every model's predictions of a batch (`actors.scoring.batch_writer`): the caps read the
model's open predictions, the windows its scan state, and the windows of the
stored results are recorded in the same transaction. So every model's result
of a coin tick is an element of the tick's one row, written once; a model that
stored its own rows appended to that row in a second transaction, a new
~500-byte row version per model and tick (docs/prediction-store.md, trap 7).
Batches with such a model are stored in batch order (`actors.scoring.batcher`), so
each one sees the results of the one before.

Manual predictions of such a model keep their own transaction (their own
tick row, source `manual`), with the same caps (`keep_under_caps`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import asyncpg

from actors.runtime.messages import Tick
from actors.scoring.model_runtime import ModelRuntime, Scored
from storage.predictions import scan_state
from storage.predictions import writes as predictions

TAGS = ("negative", "positive", "alert")
IGNORE_WINDOW = "ignore_window"  # TICKS_SKIPPED reason


@dataclass(frozen=True, slots=True)
class Limits:
    """A model's caps and windows per tag (0: none), from its active_models row."""

    caps: Mapping[str, int]
    windows: Mapping[str, int]  # seconds

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Limits:
        return cls(
            {t: int(row[f"max_open_{t}"] or 0) for t in TAGS},
            {t: int(row[f"ignore_{t}_seconds"] or 0) for t in TAGS},
        )

    @property
    def capped(self) -> bool:
        return any(self.caps.values())

    @property
    def windowed(self) -> bool:
        """Scan state exists for the windows only: without one, skip its queries. A window
        switched on later starts with the next result."""
        return any(self.windows.values())

    def scan(self, coin_id: str, tag: str, data_timestamp: datetime) -> scan_state.ScanResult:
        """What a stored result records: until when its coin is ignored (None: not)."""
        seconds = self.windows[tag]
        until = data_timestamp + timedelta(seconds=seconds) if seconds else None
        return scan_state.ScanResult(coin_id, tag, data_timestamp, until)


def limits_apply(runtime: ModelRuntime) -> bool:
    """Whether the model has caps or ignore windows (its batches are stored in order)."""
    limits = Limits.of(runtime.row)
    return limits.capped or limits.windowed


def keep_under_caps(
    caps: Mapping[str, int], counts: dict[tuple[str, str], int], results: Sequence[tuple[str, str]]
) -> list[str | None]:
    """For each (coin, tag) in order: None when kept (and counted in `counts`, the open
    predictions per coin and tag), else the TICKS_SKIPPED reason."""
    verdicts: list[str | None] = []
    for coin, tag in results:
        cap = caps[tag]
        if cap and counts.get((coin, tag), 0) >= cap:
            verdicts.append(f"open_{tag}_cap")
            continue
        counts[(coin, tag)] = counts.get((coin, tag), 0) + 1
        verdicts.append(None)
    return verdicts


class Limited(NamedTuple):
    """What the limits let through of a batch's scores (same order; a score unchanged
    is the same object), what they skipped (for the metrics, counted once the
    transaction committed), and per model the ticks they dropped (a tick processed
    again may have been stored by the first run: its webhook item is rebuilt)."""

    kept: list[Scored]
    skipped: Counter[tuple[str, str]]  # (model, reason) -> ticks
    dropped: list[tuple[ModelRuntime, list[Tick]]]
    windowed: set[int]  # active models whose stored results record a window


async def apply(conn: asyncpg.Connection, scores: Sequence[tuple[ModelRuntime, Scored]]) -> Limited:
    """Inside the storing transaction: drop the ticks a window covers or a cap is full for."""
    out = Limited([], Counter(), [], set())
    for runtime, scored in scores:
        limits = Limits.of(runtime.row)
        if limits.windowed:
            out.windowed.add(runtime.active_model_id)
        if not scored.ticks or not (limits.capped or limits.windowed):
            out.kept.append(scored)
            continue
        key = str(runtime.active_model_id)
        coins = [t.coin_id for t in scored.ticks]
        keep = [True] * len(coins)
        if limits.windowed:
            ignored = await scan_state.ignored_until(conn, runtime.active_model_id, coins)
            for k, tick in enumerate(scored.ticks):
                until = ignored.get(tick.coin_id)
                if until is not None and tick.data_timestamp < until:
                    keep[k] = False
                    out.skipped[(key, IGNORE_WINDOW)] += 1
        if limits.capped:
            _, tags = scored.tagged(runtime.target.alert_threshold)
            counts = await predictions.open_counts(
                conn, runtime.active_model_id, [c for c, ok in zip(coins, keep, strict=True) if ok]
            )
            picks = [k for k in range(len(coins)) if keep[k]]
            verdicts = keep_under_caps(limits.caps, counts, [(coins[k], tags[k]) for k in picks])
            for k, reason in zip(picks, verdicts, strict=True):
                if reason is not None:
                    keep[k] = False
                    out.skipped[(key, reason)] += 1
        if all(keep):
            out.kept.append(scored)
            continue
        picks = [k for k in range(len(coins)) if keep[k]]
        out.kept.append(
            Scored(
                [scored.ticks[k] for k in picks],
                scored.probabilities[picks],
                [scored.snapshots[k] for k in picks],
                [],  # the predictor counted these already
            )
        )
        dropped = [t for t, ok in zip(scored.ticks, keep, strict=True) if not ok]
        out.dropped.append((runtime, dropped))
    return out


async def record_windows(
    conn: asyncpg.Connection,
    runtime: ModelRuntime,
    stored: Sequence[tuple[str, datetime, str]],
) -> None:
    """The scan state of a model's stored results (coin, data time, tag), for its windows."""
    limits = Limits.of(runtime.row)
    if stored:
        await scan_state.record(
            conn, runtime.active_model_id, [limits.scan(c, tag, t) for c, t, tag in stored]
        )
