"""Each coin's latest window of rows, kept between batches without copying them all.

The history cache holds a window of rows for every coin it has seen
(thousands of coins). Keeping them in one frame and filtering it per
batch (the batch's coins out, the new windows in) copied every held row for
every batch: ~12 ms per 70-coin batch with 2000 coins held, more than the
batch's own work. Here windows are appended to one frame (no copy), a coin's
rows are a slice at its (offset, length), and the rows of replaced windows are
dropped in one pass once they outnumber the live ones.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import polars as pl


class WindowStore:
    def __init__(self, *, compact_after: int = 10_000) -> None:
        self._compact_after = compact_after  # replaced rows tolerated before a compaction
        self._frame: pl.DataFrame | None = None  # live windows and replaced rows
        self._ranges: dict[str, tuple[int, int]] = {}  # per coin: offset, length in _frame
        self._dead = 0  # replaced rows still in _frame

    def __contains__(self, mint: object) -> bool:
        return mint in self._ranges

    def __len__(self) -> int:
        return len(self._ranges)

    def mints(self) -> list[str]:
        """The held coins, the one stored longest ago first."""
        return list(self._ranges)

    def rows_of(self, mints: Iterable[str]) -> pl.DataFrame | None:
        """The held windows of these coins (those held), in this order; None if none is."""
        frame = self._frame
        if frame is None:
            return None
        parts = [frame.slice(*self._ranges[m]) for m in mints if m in self._ranges]
        if not parts:
            return None
        return pl.concat(parts, how="vertical_relaxed") if len(parts) > 1 else parts[0]

    def put(self, windows: pl.DataFrame) -> pl.DataFrame:
        """Hold `windows` in place of those coins' windows.

        Returns one row per coin of `windows`: mint, rows, first and last timestamp.
        """
        mint = windows["mint"]
        if mint.ne_missing(mint.shift(1)).sum() != mint.n_unique():
            # A coin's rows must be one slice (the caches' windows already are).
            windows = windows.sort("mint", maintain_order=True)
        groups = windows.group_by("mint", maintain_order=True).agg(
            pl.len().alias("rows"),
            pl.col("timestamp").min().alias("first"),
            pl.col("timestamp").max().alias("last"),
        )
        if windows.is_empty():
            return groups
        offset = 0 if self._frame is None else self._frame.height
        for mint, rows in zip(groups["mint"].to_list(), groups["rows"].to_list(), strict=True):
            self._drop(mint)  # re-inserted below: dict order = least recently stored first
            self._ranges[mint] = (offset, rows)
            offset += rows
        if self._frame is None:
            self._frame = windows
        else:
            self._frame = pl.concat([self._frame, windows], how="vertical_relaxed", rechunk=False)
        self._maybe_compact()
        return groups

    def forget(self, mints: Iterable[str]) -> None:
        for mint in mints:
            self._drop(mint)
        self._maybe_compact()

    def clear(self) -> None:
        self._frame, self._ranges, self._dead = None, {}, 0

    def _drop(self, mint: str) -> None:
        held = self._ranges.pop(mint, None)
        if held is not None:
            self._dead += held[1]

    def _maybe_compact(self) -> None:
        if self._frame is None:
            return
        if self._dead > max(self._frame.height - self._dead, self._compact_after):
            self._compact(self._frame)

    def _compact(self, frame: pl.DataFrame) -> None:
        """Drop the replaced rows: one pass over the frame. The kept rows keep their
        order in the frame; `_ranges` keeps its order (least recently stored first)."""
        keep = np.zeros(frame.height, dtype=bool)
        moved: dict[str, int] = {}
        offset = 0
        for mint, (start, rows) in sorted(self._ranges.items(), key=lambda item: item[1][0]):
            keep[start : start + rows] = True
            moved[mint] = offset
            offset += rows
        self._frame = frame.filter(pl.Series(keep)).rechunk()
        self._ranges = {mint: (moved[mint], rows) for mint, (_, rows) in self._ranges.items()}
        self._dead = 0
