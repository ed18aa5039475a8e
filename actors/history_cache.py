"""The newest rows of each coin, kept between batches so a batch reads only new rows.

Reading every coin's newest FEATURE_HISTORY_SIZE rows for every batch moved
~380 bytes of CSV per row through COPY: 0.3-0.4 s for a 500-coin batch, the
largest cost of a large batch. A coin that ticks again usually gained one or
two rows since, so the batch asks the database only for rows newer than the
newest one held, and the window is the held rows plus those.

That equals the direct read as long as no row appears *behind* the held
window: a tick at or before the newest held time (a late or re-sent row, seen
by the batcher even when a newer tick of the coin supersedes it) makes the
coin read its whole window again. So does a larger window than was held.

The held rows are one frame that only grows by appending each batch's
windows; a coin's rows are found by their (offset, length), and the rows a
newer window replaced are dropped in one pass once they outnumber the live
ones. Filtering the whole held frame per batch (every coin's rows, copied
twice) cost ~12 ms per batch with 2000 coins held, more than the batch's own
window.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from actors.messages import Tick


@dataclass(frozen=True, slots=True)
class HistoryPlan:
    """What to read for a batch: per tick, rows after `after` (None: the whole window)."""

    mints: list[str]
    as_of: list[datetime]
    after: list[datetime | None]
    rows: int


class HistoryCache:
    def __init__(self, *, max_coins: int = 20_000, compact_after: int = 10_000) -> None:
        self._max_coins = max_coins
        self._compact_after = compact_after  # replaced rows tolerated before a compaction
        # Every held coin's newest `_rows` rows, plus rows replaced since the last compaction.
        self._held: pl.DataFrame | None = None
        self._ranges: dict[str, tuple[int, int]] = {}  # per held coin: offset, length in _held
        self._dead = 0  # replaced rows still in _held
        self._newest: dict[str, datetime] = {}  # newest held timestamp per coin
        self._rows = 0
        self.reads_full = 0
        self.reads_delta = 0

    def plan(
        self, ticks: Sequence[Tick], rows: int, oldest_seen: Mapping[str, datetime]
    ) -> HistoryPlan:
        """`oldest_seen`: per coin, the oldest data time of the ticks behind this batch
        (coalesced ones included), to notice a row that arrived behind the window."""
        if rows != self._rows:
            self.clear()
            self._rows = rows
        after: list[datetime | None] = []
        for tick in ticks:
            newest = self._newest.get(tick.coin_id)
            # The tick itself is among the ticks seen, so this covers it too.
            oldest = min(oldest_seen.get(tick.coin_id, tick.data_timestamp), tick.data_timestamp)
            behind = newest is not None and oldest <= newest
            after.append(None if newest is None or behind else newest)
        self.reads_delta += sum(1 for a in after if a is not None)
        self.reads_full += sum(1 for a in after if a is None)
        return HistoryPlan(
            [t.coin_id for t in ticks], [t.data_timestamp for t in ticks], after, rows
        )

    def merge(self, plan: HistoryPlan, fetched: pl.DataFrame) -> pl.DataFrame:
        """The batch's history (newest `plan.rows` rows per coin at or before its tick);
        the held rows are replaced by it."""
        held = self._held
        parts = [fetched]
        if held is not None:
            reused = [
                held.slice(*self._ranges[m])
                for m, a in zip(plan.mints, plan.after, strict=True)
                if a is not None and m in self._ranges
            ]
            if reused:
                parts = [*reused, fetched]
        combined = pl.concat(parts, how="vertical_relaxed") if len(parts) > 1 else fetched
        history = (
            combined.sort(["mint", "timestamp"], maintain_order=True)
            .group_by("mint", maintain_order=True)
            .tail(plan.rows)
            .select(fetched.columns)
        )
        self._hold(history)
        return history

    def clear(self) -> None:
        self._held, self._ranges, self._newest, self._dead = None, {}, {}, 0

    def _hold(self, history: pl.DataFrame) -> None:
        """Append the batch's windows (each coin's rows are contiguous in `history`)."""
        if history.is_empty():
            return
        groups = history.group_by("mint", maintain_order=True).agg(
            pl.len().alias("rows"), pl.col("timestamp").max().alias("newest")
        )
        offset = 0 if self._held is None else self._held.height
        for mint, rows, newest in groups.iter_rows():
            self._forget(mint)
            self._ranges[mint] = (offset, rows)
            self._newest[mint] = newest  # re-inserted: dict order = least recently held first
            offset += rows
        if self._held is None:
            self._held = history
        else:
            self._held = pl.concat([self._held, history], how="vertical_relaxed", rechunk=False)
        self._evict()
        if self._dead > max(self._held.height - self._dead, self._compact_after):
            self._compact()

    def _forget(self, mint: str) -> None:
        held = self._ranges.pop(mint, None)
        if held is not None:
            self._dead += held[1]
        self._newest.pop(mint, None)

    def _compact(self) -> None:
        """Drop the replaced rows: one pass over the held frame."""
        assert self._held is not None
        live = sorted(self._ranges.items(), key=lambda item: item[1][0])
        keep = np.zeros(self._held.height, dtype=bool)
        ranges: dict[str, tuple[int, int]] = {}
        offset = 0
        for mint, (start, rows) in live:
            keep[start : start + rows] = True
            ranges[mint] = (offset, rows)
            offset += rows
        self._held = self._held.filter(pl.Series(keep)).rechunk()
        self._ranges, self._dead = ranges, 0

    def _evict(self) -> None:
        """Forget the coins seen longest ago (finished coins stop trading)."""
        excess = len(self._newest) - self._max_coins
        for mint in list(self._newest)[: max(excess, 0)]:
            self._forget(mint)
