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
The windows are held in a `WindowStore`, so a batch costs what its own coins
cost, not what every held coin does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from actors.runtime.messages import Tick
from actors.scoring.window_store import WindowStore


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
        self._held = WindowStore(compact_after=compact_after)  # newest `_rows` rows per coin
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
        reused = self._held.rows_of(
            m for m, a in zip(plan.mints, plan.after, strict=True) if a is not None
        )
        combined = (
            fetched if reused is None else pl.concat([reused, fetched], how="vertical_relaxed")
        )
        history = (
            combined.sort(["mint", "timestamp"], maintain_order=True)
            .group_by("mint", maintain_order=True)
            .tail(plan.rows)
            .select(fetched.columns)
        )
        groups = self._held.put(history)
        self._newest.update(zip(groups["mint"].to_list(), groups["last"].to_list(), strict=True))
        self._evict()
        return history

    def clear(self) -> None:
        self._held.clear()
        self._newest = {}

    def _evict(self) -> None:
        """Forget the coins seen longest ago (finished coins stop trading)."""
        excess = len(self._held) - self._max_coins
        if excess > 0:
            gone = self._held.mints()[:excess]  # the least recently held first
            for mint in gone:
                del self._newest[mint]
            self._held.forget(gone)
