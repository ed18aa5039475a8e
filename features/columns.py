"""The catalogue of coin_metrics base columns: the only column names that may reach SQL."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

import polars as pl

UTC_TIME = pl.Datetime("us", "UTC")

_FLOAT = pl.Float64()
_INT = pl.Int64()

BASE_COLUMNS: Mapping[str, pl.DataType] = MappingProxyType(
    {
        "id": _INT,
        "mint": pl.String(),
        "timestamp": UTC_TIME,
        "phase_id_at_time": _INT,
        "price_open": _FLOAT,
        "price_high": _FLOAT,
        "price_low": _FLOAT,
        "price_close": _FLOAT,
        "market_cap_close": _FLOAT,
        "bonding_curve_pct": _FLOAT,
        "virtual_sol_reserves": _FLOAT,
        "is_koth": pl.Boolean(),
        "volume_sol": _FLOAT,
        "buy_volume_sol": _FLOAT,
        "sell_volume_sol": _FLOAT,
        "net_volume_sol": _FLOAT,
        "num_buys": _INT,
        "num_sells": _INT,
        "unique_wallets": _INT,
        "num_micro_trades": _INT,
        "max_single_buy_sol": _FLOAT,
        "max_single_sell_sol": _FLOAT,
        "whale_buy_volume_sol": _FLOAT,
        "whale_sell_volume_sol": _FLOAT,
        "num_whale_buys": _INT,
        "num_whale_sells": _INT,
        "dev_sold_amount": _FLOAT,
        "volatility_pct": _FLOAT,
        "avg_trade_size_sol": _FLOAT,
        "buy_pressure_ratio": _FLOAT,
        "unique_signer_ratio": _FLOAT,
    }
)

# Columns a model may use as features directly (identity and time are not features).
FEATURE_BASE_COLUMNS: frozenset[str] = frozenset(BASE_COLUMNS) - {"id", "mint", "timestamp"}
NUMERIC_BASE_COLUMNS: tuple[str, ...] = tuple(
    name for name, dtype in BASE_COLUMNS.items() if dtype in (_FLOAT, _INT)
)


def quote_ident(name: str) -> str:
    """A catalogue column as a quoted SQL identifier; anything else is refused."""
    if name not in BASE_COLUMNS:
        raise ValueError(f"{name!r} is not a coin_metrics column")
    return '"' + name + '"'


def select_list(names: Iterable[str], table_alias: str | None = None) -> str:
    """A SQL select list of catalogue columns, quoted, optionally qualified."""
    prefix = f"{table_alias}." if table_alias else ""
    return ", ".join(prefix + quote_ident(name) for name in names)


def history_schema(names: Iterable[str] | None = None) -> dict[str, pl.DataType]:
    """The Polars schema for rows of these columns (all base columns by default)."""
    return {name: BASE_COLUMNS[name] for name in (names or BASE_COLUMNS)}


def normalise(frame: pl.DataFrame) -> pl.DataFrame:
    """Cast known columns to the catalogue types; NaN becomes NULL (pandas treats both alike)."""
    casts = []
    schema = frame.schema  # one lookup: `frame.schema` builds a new mapping on each access
    for name, dtype in BASE_COLUMNS.items():
        if name not in schema:
            continue
        if name == "timestamp":
            current = schema[name]
            if isinstance(current, pl.Datetime):
                expr = (
                    pl.col(name).dt.convert_time_zone("UTC")
                    if current.time_zone
                    else pl.col(name).dt.replace_time_zone("UTC")
                )
                casts.append(expr.dt.cast_time_unit("us").alias(name))
            else:
                casts.append(pl.col(name).str.to_datetime(time_zone="UTC").dt.cast_time_unit("us"))
        elif dtype == _FLOAT:
            casts.append(pl.col(name).cast(_FLOAT).fill_nan(None))
        elif schema[name] != dtype:
            casts.append(pl.col(name).cast(dtype, strict=False))
    return frame.with_columns(casts) if casts else frame


# The running state of a coin before its loaded rows (features.running), by column;
# here so that engineering and running both read it without importing each other.
PREFIX_SCHEMA: dict[str, pl.DataType] = {
    "mint": pl.String(),
    "prefix_rows": pl.Int64(),
    "prefix_max_high": pl.Float64(),
    "prefix_last_ath": pl.Float64(),
    "prefix_dev_sum": pl.Float64(),
    "first_timestamp": UTC_TIME,
    "prefix_last_breakout": UTC_TIME,
}
