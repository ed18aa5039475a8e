"""From a model's feature list to the float64 matrix it is fed.

A model's needs are derived once, at import: which base columns, which
windows, which `_has_data` flags, how much history. A feature the engine
cannot produce is refused there, by name; nothing is ever filled with a
constant to make a model run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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


class UnknownFeatureError(ValueError):
    """Features the engine cannot produce; `.names` lists every one of them."""

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
        windows = self.windows or (1,)
        extra = tuple(sorted(set(self.has_data_flags) - set(_all_flags(windows))))
        return windows, extra

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


def _all_flags(windows: tuple[int, ...]) -> list[str]:
    return [f"{name}{HAS_DATA_SUFFIX}" for name in engineered_names(windows) if _window_of(name)]


@dataclass(frozen=True, slots=True)
class Matrix:
    """Rows for the ticks that had a feature row; the others with the reason."""

    values: np.ndarray  # float64 [len(rows), len(features)]
    rows: list[int]  # tick indices, in matrix row order
    skipped: list[tuple[int, str]]


def build_matrix(computed: pl.DataFrame, ticks: pl.DataFrame, spec: FeatureSpec) -> Matrix:
    """The feature row at each tick's exact timestamp, columns in the model's order.

    `ticks` has `mint` and `timestamp`; a tick without a row at that timestamp
    (rows after it are never used) is skipped with a reason.
    """
    keyed = ticks.select("mint", "timestamp").with_row_index("_tick")
    missing_cols = [f for f in spec.features if f not in computed.columns]
    if missing_cols:
        raise UnknownFeatureError(missing_cols)
    selected = computed.select("mint", "timestamp", *spec.features).unique(
        subset=["mint", "timestamp"], keep="last", maintain_order=True
    )
    joined = keyed.join(selected, on=["mint", "timestamp"], how="left", maintain_order="left")
    present = joined.filter(pl.col(spec.features[0]).is_not_null() | _any_not_null(spec))
    found = set(present["_tick"].to_list())
    skipped = [
        (i, "no coin_metrics row at the tick") for i in range(ticks.height) if i not in found
    ]
    values = present.select([pl.col(f).cast(pl.Float64) for f in spec.features]).to_numpy(order="c")
    if np.isnan(values).any():
        # A NULL in a base column the model uses: refuse the row rather than invent a value.
        bad = np.isnan(values).any(axis=1)
        rows = present["_tick"].to_list()
        skipped += [(rows[i], "NULL in a base column the model uses") for i in np.where(bad)[0]]
        present = present.filter(pl.Series(~bad))
        values = values[~bad]
    return Matrix(values=values, rows=present["_tick"].to_list(), skipped=sorted(skipped))


def _any_not_null(spec: FeatureSpec) -> pl.Expr:
    return pl.any_horizontal([pl.col(f).is_not_null() for f in spec.features])
