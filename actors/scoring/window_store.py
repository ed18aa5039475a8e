"""Each coin's latest window of rows, kept between batches without copying them all.

The history cache holds a window of rows for every coin it has seen
(thousands of coins). Keeping them in one frame and filtering it per
batch (the batch's coins out, the new windows in) copied every held row for
every batch: ~12 ms per 70-coin batch with 2000 coins held, more than the
batch's own work. Here windows are appended to one frame (no copy), a coin's
rows are the ones at its (offset, length), and the rows of replaced windows are
dropped in one pass once they outnumber the live ones. Each window also keeps
its rows' sort keys (times as int64) so that a merge orders rows without
reading them from the frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import polars as pl

# Appended windows (one chunk per batch) held before they are copied into one chunk:
# a gather across many chunks costs several times one across a few.
MAX_CHUNKS = 16


class HeldWindow(NamedTuple):
    offset: int  # of its first row in the frame
    rows: int
    keys: np.ndarray  # int64 sort key (time) of each row


class WindowStore:
    def __init__(self, *, compact_after: int = 10_000) -> None:
        self._compact_after = compact_after  # replaced rows tolerated before a compaction
        self._frame: pl.DataFrame | None = None  # live windows and replaced rows
        self._windows: dict[str, HeldWindow] = {}
        self._dead = 0  # replaced rows still in _frame

    def __contains__(self, mint: object) -> bool:
        return mint in self._windows

    def __len__(self) -> int:
        return len(self._windows)

    def mints(self) -> list[str]:
        """The held coins, the one stored longest ago first."""
        return list(self._windows)

    def window(self, mint: str) -> HeldWindow | None:
        """Where a coin's window is in `frame_with`'s frame (None if not held)."""
        return self._windows.get(mint)

    def frame_with(self, extra: pl.DataFrame) -> tuple[pl.DataFrame, int]:
        """The held rows with `extra`'s after them (no copy), and where `extra` begins.
        A frame of other columns or types than those held joins them as a concat does."""
        frame = self._frame
        if frame is None:
            return extra, 0
        return _stacked(frame, extra), frame.height

    def put(
        self, windows: pl.DataFrame, coins: Sequence[tuple[str, int]], keys: np.ndarray
    ) -> None:
        """Hold `windows` in place of those coins' windows: its rows are the coins'
        windows one after the other, in the order of `coins` (mint, rows); `keys` are
        its rows' sort keys."""
        offset = 0 if self._frame is None else self._frame.height
        start = 0
        for mint, rows in coins:
            self._drop(mint)  # re-inserted below: dict order = least recently stored first
            own = keys[start : start + rows].copy()  # not a view of the whole batch's keys
            self._windows[mint] = HeldWindow(offset + start, rows, own)
            start += rows
        self._frame = windows if self._frame is None else _stacked(self._frame, windows)
        self._maybe_compact()

    def forget(self, mints: Iterable[str]) -> None:
        for mint in mints:
            self._drop(mint)
        self._maybe_compact()

    def clear(self) -> None:
        self._frame, self._windows, self._dead = None, {}, 0

    def _drop(self, mint: str) -> None:
        held = self._windows.pop(mint, None)
        if held is not None:
            self._dead += held.rows

    def _maybe_compact(self) -> None:
        if self._frame is None:
            return
        if self._dead > max(self._frame.height - self._dead, self._compact_after):
            self._compact(self._frame)
        elif self._frame.n_chunks() > MAX_CHUNKS:
            self._frame = self._frame.rechunk()

    def _compact(self, frame: pl.DataFrame) -> None:
        """Drop the replaced rows: one pass over the frame. The kept rows keep their
        order in the frame; `_windows` keeps its order (least recently stored first)."""
        keep = np.zeros(frame.height, dtype=bool)
        moved: dict[str, int] = {}
        offset = 0
        for mint, held in sorted(self._windows.items(), key=lambda item: item[1].offset):
            keep[held.offset : held.offset + held.rows] = True
            moved[mint] = offset
            offset += held.rows
        self._frame = frame.filter(pl.Series(keep)).rechunk()
        self._windows = {m: held._replace(offset=moved[m]) for m, held in self._windows.items()}
        self._dead = 0


def _stacked(frame: pl.DataFrame, extra: pl.DataFrame) -> pl.DataFrame:
    """`frame` and then `extra`'s rows: no copy (vstack) when their columns agree."""
    if frame.columns == extra.columns and frame.dtypes == extra.dtypes:
        return frame.vstack(extra)
    return pl.concat([frame, extra], how="vertical_relaxed", rechunk=False)
