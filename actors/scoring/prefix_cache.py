"""Running per-coin state before each coin's history window, carried between batches.

Running features must equal their value over *all* of a coin's rows up to the
tick (FEATURES.md), but a batch loads only the newest rows of each coin.
Re-reading a coin's whole history at every tick would cost O(age) per tick, so
the state before the window ("prefix", see `features.running`) is kept here:
built from the database once, when a coin is first seen (or its window jumped
past what we hold), and afterwards rolled forward from the rows that left the
window, which the previous batch already loaded.

States are kept per coin (`CoinPrefix`) and rolled by a short loop over the
one or two rows a coin's window moved by: frame operations over the batch's
coins cost ~15 ms of Polars calls per small batch, most of a quiet pipeline's
latency. Loading from the database stays vectorised (`prefix_state`), as a
coin seen for the first time may bring thousands of rows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from features.columns import history_schema
from features.last_row import epoch_us, sorted_runs
from features.running import (
    NEUTRAL,
    PREFIX_INPUT_COLUMNS,
    CoinPrefix,
    advance_prefix,
    coin_prefixes,
    empty_prefix,
    prefix_frame,
    prefix_state,
)

_WINDOW_SCHEMA = history_schema(PREFIX_INPUT_COLUMNS)
_NO_ROWS = pl.DataFrame(schema=_WINDOW_SCHEMA)
_NO_PHASE = np.iinfo(np.int64).min  # a NULL phase: in no model's phase list

# Loads, per coin, every row strictly before its boundary (PREFIX_INPUT_COLUMNS at least).
RowsBefore = Callable[[Sequence[str], Sequence[datetime]], Awaitable[pl.DataFrame]]


def _phase_ids(key: str) -> list[int] | None:
    """The phases of a phase key (None: "all")."""
    return None if key == "all" else [int(p) for p in key.split(",")]


def phase_filter(key: str) -> pl.Expr | None:
    """Rows a model with this phase key sees (None: all rows)."""
    ids = _phase_ids(key)
    return None if ids is None else pl.col("phase_id_at_time").is_in(ids)


def phase_rows(frame: pl.DataFrame, key: str) -> pl.DataFrame:
    """The rows of `frame` a model with this phase key sees."""
    expr = phase_filter(key)
    return frame if expr is None else frame.filter(expr)


def _phases(key: str) -> np.ndarray | None:
    ids = _phase_ids(key)
    return None if ids is None else np.array(ids, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class _Window:
    """A coin's rows of the previous batch (times in microseconds, NULL as NaN)."""

    times_us: np.ndarray
    phases: np.ndarray
    highs: np.ndarray
    devs: np.ndarray

    @property
    def boundary(self) -> int:
        return int(self.times_us[0])

    @property
    def last(self) -> int:
        return int(self.times_us[-1])

    def before(self, boundary: int, phases: np.ndarray | None) -> _Window:
        """Its rows before `boundary` that a model of these phases sees."""
        keep = self.times_us < boundary
        if phases is not None:
            keep &= np.isin(self.phases, phases)
        return _Window(self.times_us[keep], self.phases[keep], self.highs[keep], self.devs[keep])


def _windows(history: pl.DataFrame) -> tuple[list[str], list[_Window]]:
    """Each coin's rows of `history`, in time order, as arrays (read column by column:
    frame casts, sorts and expressions cost a fixed ~0.05-0.1 ms each per batch)."""
    frame, mints, counts = sorted_runs(history)
    times = epoch_us(frame.get_column("timestamp"))
    phases = _values(frame.get_column("phase_id_at_time"), pl.Int64(), _NO_PHASE)
    highs = _values(frame.get_column("price_high"), pl.Float64(), None)  # NULL -> NaN
    devs = _values(frame.get_column("dev_sold_amount"), pl.Float64(), None)
    windows = []
    start = 0
    for end in np.cumsum(counts).tolist():
        windows.append(
            _Window(
                times[start:end].copy(),
                phases[start:end].copy(),
                highs[start:end].copy(),
                devs[start:end].copy(),
            )
        )
        start = end
    return mints, windows


def _values(column: pl.Series, dtype: pl.DataType, null: int | None) -> np.ndarray:
    """A column as NumPy values of `dtype`, NULL as `null` (None: NaN, for floats)."""
    if column.dtype != dtype:
        column = column.cast(dtype)
    if null is not None and column.null_count():
        column = column.fill_null(null)
    return column.to_numpy()


class PrefixCache:
    def __init__(self, rows_before: RowsBefore, *, max_coins: int = 50_000) -> None:
        self._rows_before = rows_before
        self._max_coins = max_coins
        self._held: dict[str, _Window] = {}  # each coin's window of the previous batch
        self._states: dict[str, dict[str, CoinPrefix]] = {}  # per phase key, per coin

    async def prefix_for(
        self, history: pl.DataFrame, keys: Iterable[str], window_rows: int | None = None
    ) -> pl.DataFrame:
        """The prefix state of every coin of `history` for each phase key, with `phase_key`.

        `window_rows`: how many rows per coin `history` was asked for. A coin with fewer
        has no rows before its window (all its rows up to the tick were loaded), so
        its state is neutral without asking the database.
        """
        keys = sorted(set(keys))
        if history.is_empty() or not keys:
            return empty_prefix(with_phase_key=True)
        mints, windows = _windows(history)
        held = [self._held.get(mint) for mint in mints]
        states = [self._states.setdefault(key, {}) for key in keys]
        misses = [
            i
            for i, (mint, window, old) in enumerate(zip(mints, windows, held, strict=True))
            if old is None
            or not old.boundary <= window.boundary <= old.last
            or any(mint not in of_key for of_key in states)
        ]
        loaded = await self._load(
            [
                (mints[i], windows[i].boundary)
                for i in misses
                if window_rows is None or len(windows[i].times_us) >= window_rows
            ]
        )
        missed = set(misses)
        parts = []
        for key, of_key in zip(keys, states, strict=True):
            phases = _phases(key)
            fresh = coin_prefixes(prefix_state(phase_rows(loaded, key))) if loaded.height else {}
            result = []
            for i, (mint, window, old) in enumerate(zip(mints, windows, held, strict=True)):
                if i in missed:
                    state = fresh.get(mint, NEUTRAL)
                else:
                    assert old is not None
                    state = of_key[mint]
                    if old.boundary < window.boundary:
                        left = old.before(window.boundary, phases)
                        state = advance_prefix(
                            state, left.times_us.tolist(), left.highs.tolist(), left.devs.tolist()
                        )
                of_key[mint] = state
                result.append(state)
            keyed = pl.Series("phase_key", [key] * len(mints), dtype=pl.String)
            parts.append(prefix_frame(mints, result).hstack([keyed]))
        for mint, window in zip(mints, windows, strict=True):
            self._held.pop(mint, None)  # re-inserted: dict order = least recently seen first
            self._held[mint] = window
        self._evict()
        return pl.concat(parts, how="vertical") if len(parts) > 1 else parts[0]

    async def _load(self, wanted: list[tuple[str, int]]) -> pl.DataFrame:
        if not wanted:
            return _NO_ROWS
        boundaries = pl.Series([b for _, b in wanted], dtype=pl.Int64).cast(
            _WINDOW_SCHEMA["timestamp"]
        )
        rows = await self._rows_before([m for m, _ in wanted], boundaries.to_list())
        return rows.select(PREFIX_INPUT_COLUMNS).cast(_WINDOW_SCHEMA)  # type: ignore[arg-type]

    def _evict(self) -> None:
        """Forget the coins seen longest ago (finished coins stop trading)."""
        excess = len(self._held) - self._max_coins
        if excess <= 0:
            return
        gone = list(self._held)[:excess]
        for mint in gone:
            del self._held[mint]
            for of_key in self._states.values():
                of_key.pop(mint, None)
