"""From a model's feature list to the float64 matrix it is fed.

A model's needs are derived once, at import: which base columns, which
windows, which `_has_data` flags, how much history. A feature the engine
cannot produce is refused there, by name; nothing is ever filled with a
constant to make a model run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl

from features.columns import FEATURE_BASE_COLUMNS
from features.engineering import (
    HAS_DATA_SUFFIX,
    UNWINDOWED_ENGINEERED,
    WINDOWED_PREFIXES,
    compute,
    engineered_names,
)
from features.last_row import LastRows, compute_last

# Why a model did not get a tick's row (pp_ticks_skipped_total{reason}, spaces as "_").
NO_ROW = "no coin_metrics row at the tick"
NULL_FEATURE = "NULL in a base column the model uses"
HUGE_FEATURE = "feature value beyond float32"
FLOAT32_MAX = float(np.finfo(np.float32).max)


class UnknownFeatureError(ValueError):
    """Features the engine cannot produce; `.names` lists every one of them.

    The features layer's one error (it imports nothing of ours, so it has no base of
    storage's or actors' family); `code` is the stable code the import reports."""

    code = "unknown_features"

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        super().__init__(
            f"unknown feature(s) {', '.join(self.names)}: neither coin_metrics columns nor "
            "engineered features this service can compute"
        )


def _window_of(name: str) -> int | None:
    """The window of a windowed engineered feature name, else None."""
    prefix, _, window = name.rpartition("_")
    if prefix in WINDOWED_PREFIXES and window.isdigit() and int(window) >= 1:
        return int(window)
    return None


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    features: tuple[str, ...]
    base_columns: tuple[str, ...]
    windows: tuple[int, ...]
    has_data_flags: tuple[str, ...]
    needs_engineering: bool
    history_rows: int

    @classmethod
    def from_model(
        cls, features: Sequence[str], params: Mapping[str, Any] | None = None
    ) -> FeatureSpec:
        if not features:
            raise UnknownFeatureError(["<empty feature list>"])
        unknown: list[str] = []
        windows: set[int] = set()
        base: list[str] = []
        flags: list[str] = []
        engineered = False
        for name in features:
            if name in FEATURE_BASE_COLUMNS:
                base.append(name)
            elif name in UNWINDOWED_ENGINEERED:
                engineered = True
            elif (w := _window_of(name)) is not None:
                windows.add(w)
                engineered = True
            elif name.endswith(HAS_DATA_SUFFIX) and (
                _window_of(name.removesuffix(HAS_DATA_SUFFIX)) is not None
            ):
                flags.append(name)
                engineered = True
            else:
                unknown.append(name)
        if unknown:
            raise UnknownFeatureError(unknown)
        if len(set(features)) != len(features):
            dupes = sorted({f for f in features if list(features).count(f) > 1})
            raise ValueError(f"duplicate feature(s) in the model's list: {', '.join(dupes)}")
        # The model's configured windows are kept only as far as its features use them:
        # extra windows would cost time and change nothing it is fed.
        del params
        ordered = tuple(sorted(windows))
        longest = max(ordered, default=1)
        return cls(
            features=tuple(features),
            base_columns=tuple(dict.fromkeys(base)),
            windows=ordered,
            has_data_flags=tuple(flags),
            needs_engineering=engineered,
            history_rows=2 * longest + 1,
        )

    def compute(self, history: pl.DataFrame, seed: pl.DataFrame | None = None) -> pl.DataFrame:
        """The computed frame this model needs (sorted by mint, timestamp)."""
        if not self.needs_engineering:
            return history.sort(["mint", "timestamp"])
        return compute(history, self.windows or (1,), seed=seed, has_data_for=self.has_data_flags)

    @property
    def shared_key(self) -> tuple[tuple[int, ...], tuple[str, ...]] | None:
        """Models with the same key can share one computed frame (None: base columns only)."""
        if not self.needs_engineering:
            return None
        return _shared_key(self.windows or (1,), self.has_data_flags)

    def compute_shared_last(
        self, history: pl.DataFrame, seed: pl.DataFrame | None = None
    ) -> LastRows:
        """`compute_shared` at each coin's newest row only (the serving path)."""
        key = self.shared_key
        if key is None:
            return compute_last(history, (1,), engineer=False)
        windows, extra = key
        return compute_last(
            history, windows, seed=seed, has_data_for=[*_all_flags(windows), *extra]
        )

    def compute_shared(
        self, history: pl.DataFrame, seed: pl.DataFrame | None = None
    ) -> pl.DataFrame:
        """Every engineered feature and `_has_data` flag of this model's windows (plus its
        own flags): a superset of what it needs, the same for every model with the same
        `shared_key`, so that one computation per batch serves them all."""
        key = self.shared_key
        if key is None:
            return history.sort(["mint", "timestamp"])
        windows, extra = key
        return compute(history, windows, seed=seed, has_data_for=[*_all_flags(windows), *extra])


@functools.lru_cache(maxsize=256)
def _shared_key(
    windows: tuple[int, ...], has_data_flags: tuple[str, ...]
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Cached: every model asks for its key once per batch, and deriving the flag names
    parsed ~80 feature names each time (one entry per distinct spec; bounded all the same)."""
    return windows, tuple(sorted(set(has_data_flags) - set(_all_flags(windows))))


@functools.lru_cache(maxsize=256)
def _all_flags(windows: tuple[int, ...]) -> tuple[str, ...]:
    """Every `_has_data` flag of these windows (cached: a pure function of few keys)."""
    names = engineered_names(windows)
    return tuple(f"{name}{HAS_DATA_SUFFIX}" for name in names if _window_of(name))


@dataclass(frozen=True, slots=True)
class Matrix:
    """Rows for the ticks that had a feature row; the others with the reason."""

    values: np.ndarray  # float64 [len(rows), len(features)]
    rows: list[int]  # tick indices, in matrix row order
    skipped: list[tuple[int, str]]
    positions: np.ndarray  # the TickRows row of each matrix row (for `TickRows.column`)


# Up to this many found rows, a batch's rows are copied once (every column) and checked
# once for NULL and huge values, and each model takes its columns from that copy; more
# rows (a backtest) are gathered per model, cell by cell (a copy of every column of
# every row would cost more than the models).
SHARED_BLOCK_ROWS = 256


@dataclass(frozen=True, slots=True)
class _Found:
    """What every model scoring the same ticks shares within a batch (`TickRows.found`)."""

    keys: object  # the tick sequence it was made for (kept so that its id stays unique)
    found: np.ndarray  # TickRows row of each tick, -1: none
    has_row: np.ndarray  # found >= 0
    block: np.ndarray | None  # the found rows, every column (None: too many rows)
    clean: bool  # no NULL and no value beyond float32 anywhere in `block`
    rows: list[int]  # tick indices with a row
    skipped: list[tuple[int, str]]  # ticks without a row
    positions: np.ndarray  # found[has_row], read-only


@dataclass(frozen=True, slots=True)
class TickRows:
    """A computed frame as a float64 matrix whose rows are found by (mint, timestamp).

    Built once per batch and feature key; every model then takes its columns and
    its ticks' rows with NumPy indexing instead of joining frames (Polars calls
    have a fixed cost that dominated small batches with many models). What the
    models of a batch share (their ticks' rows, the NULL check, the snapshot
    columns) is computed by the first and kept in `memo` for the others.
    """

    values: np.ndarray  # float64 [rows, columns]; NULL is NaN
    columns: dict[str, int]
    index: dict[tuple[str, datetime], int]
    # (kind, id of the shared input) -> result; this batch's only, never compared.
    memo: dict[tuple[str, int], Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_frame(cls, computed: pl.DataFrame) -> TickRows:
        names = [c for c in computed.columns if c not in ("mint", "timestamp")]
        values = computed.select([pl.col(c).cast(pl.Float64) for c in names]).to_numpy()
        keys = zip(computed["mint"].to_list(), computed["timestamp"].to_list(), strict=True)
        # Equal (mint, timestamp) twice: the later row wins, as a re-sent row would.
        index = {key: i for i, key in enumerate(keys)}
        return cls(np.asarray(values, dtype=np.float64), {n: i for i, n in enumerate(names)}, index)

    @classmethod
    def from_last(cls, last: LastRows) -> TickRows:
        index = {key: i for i, key in enumerate(zip(last.mints, last.timestamps, strict=True))}
        return cls(last.values, {n: i for i, n in enumerate(last.columns)}, index)

    def positions(self, keys: Sequence[tuple[str, datetime]]) -> np.ndarray:
        """The row of each key (-1: none). Models scoring the same ticks can share it."""
        get = self.index.get
        return np.fromiter((get(key, -1) for key in keys), dtype=np.intp, count=len(keys))

    def found(self, ticks: Sequence[Any], keys: Callable[[], np.ndarray]) -> _Found:
        """The rows of these ticks and their checks, computed once per tick sequence.

        `ticks` is the sequence models pass (the same object for every model that
        scores the whole batch); `keys()` gives its positions when not known yet.
        """
        memo_key = ("found", id(ticks))
        shared: _Found | None = self.memo.get(memo_key)
        if shared is not None and shared.keys is ticks:
            return shared
        found = keys()
        has_row = found >= 0
        picked = found[has_row]
        block = None
        clean = False
        if len(picked) <= SHARED_BLOCK_ROWS:
            block = self.values[picked]
            clean = not _any_bad(block)
        positions = picked
        positions.flags.writeable = False
        shared = _Found(
            keys=ticks,
            found=found,
            has_row=has_row,
            block=block,
            clean=clean,
            rows=np.flatnonzero(has_row).tolist(),
            skipped=[(int(i), NO_ROW) for i in np.flatnonzero(~has_row)],
            positions=positions,
        )
        self.memo[memo_key] = shared
        return shared

    def matrix(
        self,
        keys: Sequence[tuple[str, datetime]],
        spec: FeatureSpec,
        found: np.ndarray | None = None,
        shared: _Found | None = None,
    ) -> Matrix:
        """The feature row at each key's exact timestamp, columns in the model's order.

        `found`: `positions(keys)`, when the caller already has it; `shared`: `found(...)`
        of these keys, when the models of a batch share it (then `keys`/`found` are unused).
        """
        columns = self.columns
        try:
            cols = np.fromiter(
                map(columns.__getitem__, spec.features), dtype=np.intp, count=len(spec.features)
            )
        except KeyError:
            raise UnknownFeatureError([f for f in spec.features if f not in columns]) from None
        if shared is not None and shared.block is not None:
            values = shared.block.take(cols, axis=1)
            if shared.clean:
                # No cell of these rows is NULL or huge, so none of this model's is: the
                # checks below would keep every row.
                return Matrix(values, list(shared.rows), list(shared.skipped), shared.positions)
            return self._checked(values, shared.found, shared.has_row)
        if shared is not None:
            found = shared.found
        if found is None:
            found = self.positions(keys)
        has_row = found >= 0
        # One gather of the wanted cells: copying whole rows first (a wide shared frame) cost
        # more than the model itself when most rows are wanted (a backtest).
        return self._checked(self.values[np.ix_(found[has_row], cols)], found, has_row)

    @staticmethod
    def _checked(values: np.ndarray, found: np.ndarray, has_row: np.ndarray) -> Matrix:
        """The matrix of the found rows' `values` without the rows that have a NULL or a
        value beyond float32 in them, each skipped with its reason."""
        keep = has_row.copy()
        skipped = [(int(i), NO_ROW) for i in np.flatnonzero(~has_row)]
        if values.size:
            # A NULL in a base column the model uses: refuse the row rather than invent a value.
            missing = np.isnan(values).any(axis=1)
            # Both model kinds compute in float32, where a value beyond it is infinite: far
            # outside anything a model was trained on. scikit-learn's estimator refuses such
            # input (raising for the whole batch); the compiled forest and XGBoost would
            # quietly treat it as infinity. Refuse the row with a reason instead.
            too_large = (np.abs(values) > FLOAT32_MAX).any(axis=1)
            bad = missing | too_large
            if bad.any():
                rows = np.flatnonzero(has_row)
                keep[rows[bad]] = False
                skipped += [(int(i), NULL_FEATURE) for i in rows[missing]]
                skipped += [(int(i), HUGE_FEATURE) for i in rows[too_large & ~missing]]
                values = values[~bad]
        return Matrix(
            values=np.ascontiguousarray(values),
            rows=np.flatnonzero(keep).tolist(),
            skipped=sorted(skipped),
            positions=found[keep],
        )

    def column(self, positions: np.ndarray, name: str) -> list[float | None]:
        """One column's value at these rows (see `Matrix.positions`); NULL is None."""
        if name not in self.columns:
            return [None] * len(positions)
        picked = self.values[positions, self.columns[name]]
        if not np.isnan(picked).any():
            values: list[float | None] = picked.tolist()
            return values
        return [None if v != v else v for v in picked.tolist()]  # NaN (NULL) -> None

    def snapshots(self, positions: np.ndarray) -> list[tuple[float | None, float | None]]:
        """(price_close, market_cap_close) at these rows; computed once per batch for the
        positions models share (`_Found.positions`)."""
        memo_key = ("snapshots", id(positions))
        kept = self.memo.get(memo_key)
        if kept is not None and kept[0] is positions:
            return list(kept[1])
        closes = self.column(positions, "price_close")
        caps = self.column(positions, "market_cap_close")
        pairs = list(zip(closes, caps, strict=True))
        self.memo[memo_key] = (positions, pairs)
        return list(pairs)


def _any_bad(values: np.ndarray) -> bool:
    """A NULL (NaN) or a value beyond float32 anywhere (see `TickRows._checked`)."""
    return bool(np.isnan(values).any() or (np.abs(values) > FLOAT32_MAX).any())


def build_matrix(computed: pl.DataFrame, ticks: pl.DataFrame, spec: FeatureSpec) -> Matrix:
    """The feature row at each tick's exact timestamp, columns in the model's order.

    `ticks` has `mint` and `timestamp`; a tick without a row at that timestamp
    (rows after it are never used) is skipped with a reason.
    """
    keys = list(zip(ticks["mint"].to_list(), ticks["timestamp"].to_list(), strict=True))
    return TickRows.from_frame(computed).matrix(keys, spec)
