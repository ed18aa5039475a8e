"""Reads of the collector's `coin_metrics` table (never written by this service).

History for a batch is loaded with one query for all its coins and streamed
with COPY ... CSV straight into Polars: building a frame from asyncpg records
costs a Python object per value, the CSV path costs one parse in Rust.

The collector's values are not trusted; every read here is total over what the
column types can store:

- A row's timestamp is usable from `EARLIEST_TICK` up to a bound a little ahead
  of the reader's clock. `read_ticks` classifies every other row (±infinity,
  before Christ, centuries ahead, NULL) with a reason instead of letting asyncpg
  decode it (it raises on BC dates, and returns naive datetimes for ±infinity),
  and the history reads never load such rows.
- A numeric beyond double (NaN, ±Infinity, 1e1000) is read as NULL: missing, as
  the evaluator treats it, never an infinite feature.
- A tick whose price_close is zero, negative or not finite is skipped with a
  reason (nothing can be measured against it).
- Duplicated (mint, timestamp): the row with the highest id is THE row at that
  time, for prediction (history reads keep only it) and for evaluation
  (`storage.predictions.evaluations` picks `ORDER BY id DESC` at T). A duplicate committed
  after its tick was predicted changes nothing already stored (predictions are
  unique per model, coin and timestamp).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import numpy as np
import polars as pl

from features.columns import BASE_COLUMNS, UTC_TIME, history_schema, quote_ident
from features.running import PREFIX_INPUT_COLUMNS
from storage.db.id_bisection import last_id_older_than

HISTORY_COLUMNS: tuple[str, ...] = tuple(BASE_COLUMNS)

# Rows dated before this are placeholders (epoch 0, '-infinity', BC), not trades:
# pump.fun began in 2024. The bound also keeps every value Python can represent.
EARLIEST_TICK = datetime(2000, 1, 1, tzinfo=UTC)
# Reads that are not bounded by a tick's time stop here (Python's datetime ends in 9999).
LATEST_READABLE = datetime(9999, 1, 1, tzinfo=UTC)
# History reads of up to this many coins are plain queries, larger ones COPY (see
# `_small_or_copy`).
SMALL_READ_COINS = 64

# Why `read_ticks` skips a row (pp_ticks_skipped_total{reason}).
SKIP_MINT_MISSING = "mint_missing"
SKIP_TIMESTAMP_MISSING = "timestamp_missing"
SKIP_TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
SKIP_TIMESTAMP_IN_FUTURE = "timestamp_in_future"
SKIP_PRICE_NOT_POSITIVE = "price_not_positive"
SKIP_PRICE_NOT_FINITE = "price_not_finite"
SKIP_REASONS = (
    SKIP_MINT_MISSING,
    SKIP_TIMESTAMP_MISSING,
    SKIP_TIMESTAMP_OUT_OF_RANGE,
    SKIP_TIMESTAMP_IN_FUTURE,
    SKIP_PRICE_NOT_POSITIVE,
    SKIP_PRICE_NOT_FINITE,
)
# The largest double: a numeric above it (or NaN, which sorts above every number in
# PostgreSQL, or Infinity) has no float value.
_MAX_DOUBLE = "1.7976931348623157e308"


# The collector's columns (id is the table's identity), in catalogue order.
COLLECTOR_COLUMNS: tuple[str, ...] = tuple(c for c in BASE_COLUMNS if c != "id")


def _array_type(column: str) -> str:
    dtype = BASE_COLUMNS[column]
    if isinstance(dtype, pl.Datetime):
        return "timestamptz[]"
    if dtype == pl.String():
        return "text[]"
    if dtype == pl.Boolean():
        return "boolean[]"
    # Floats travel as float8 and PostgreSQL casts them to the column's numeric type.
    return "int[]" if dtype == pl.Int64() else "float8[]"


INSERT_SQL = (
    "INSERT INTO coin_metrics ("
    + ", ".join(quote_ident(c) for c in COLLECTOR_COLUMNS)
    + ") SELECT * FROM unnest("
    + ", ".join(f"${i}::{_array_type(c)}" for i, c in enumerate(COLLECTOR_COLUMNS, 1))
    + ") RETURNING id"
)


async def insert_columns(
    executor: asyncpg.Pool | asyncpg.Connection, columns: Sequence[Sequence[object]]
) -> list[int]:
    """Insert rows given as column arrays (COLLECTOR_COLUMNS order) in ONE statement.

    The service itself never writes coin_metrics (the collector owns it); the demo
    collector, replay, the benchmark and the tests write it the way a collector
    does, a few rows per statement. Returns the new ids in row order.
    """
    if not columns or not columns[0]:
        return []
    rows = await executor.fetch(INSERT_SQL, *columns)
    return [int(r["id"]) for r in rows]


@dataclass(frozen=True, slots=True)
class TickRow:
    id: int
    mint: str
    timestamp: datetime
    phase_id: int | None


@dataclass(frozen=True, slots=True)
class UnusableRow:
    """A row intake cannot use, and why. Its timestamp is PostgreSQL's text of it in
    UTC ('4713-01-01 00:00:00 BC', 'infinity'): it may have no Python value."""

    id: int
    mint: str | None
    timestamp: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class ForeignRow:
    """A row of a shard the reader does not hold: only its id (the reader's gap
    tracking and page bounds count every id; the row is another holder's work)."""

    id: int


# Every row of a read is classified in SQL, so no value asyncpg cannot decode reaches
# Python. {source} yields the candidate rows; {mine} says whether a row is the reader's.
_CLASSIFIED_READ = f"""
    SELECT id, mint, phase_id_at_time, reason, mine,
           CASE WHEN reason IS NULL THEN "timestamp" END AS "timestamp",
           CASE WHEN reason IS NOT NULL
               THEN ("timestamp" AT TIME ZONE 'UTC')::text END AS timestamp_text
    FROM (
        SELECT t.*,
               CASE
                   WHEN NOT t.mine THEN NULL
                   WHEN t.mint IS NULL THEN '{SKIP_MINT_MISSING}'
                   WHEN t."timestamp" IS NULL THEN '{SKIP_TIMESTAMP_MISSING}'
                   WHEN t."timestamp" < $4 THEN '{SKIP_TIMESTAMP_OUT_OF_RANGE}'
                   WHEN t."timestamp" > $5 THEN '{SKIP_TIMESTAMP_IN_FUTURE}'
                   WHEN t.price_close <= 0 THEN '{SKIP_PRICE_NOT_POSITIVE}'
                   WHEN t.price_close > {_MAX_DOUBLE} THEN '{SKIP_PRICE_NOT_FINITE}'
               END AS reason
        FROM (SELECT u.*, {{mine}} AS mine FROM ({{source}}) AS u) AS t
        ORDER BY t.id
        LIMIT $3
    ) AS classified
    ORDER BY id
"""
_COLUMNS = 'id, mint, "timestamp", phase_id_at_time, price_close'
# Two primary-key reads joined by UNION ALL: with `id > $1 OR id = ANY($2)` the
# generic plan of the prepared statement estimated a third of the table and
# bitmap-scanned and sorted it (58 ms per read with 70 000 rows, pg_stat_statements).
_NEW_AND_GAPS = f"""
    (SELECT {_COLUMNS} FROM coin_metrics WHERE id > $1 ORDER BY id LIMIT $3)
    UNION ALL
    SELECT {_COLUMNS} FROM coin_metrics WHERE id = ANY($2::bigint[]) AND id <= $1
"""
_READ_ALL = _CLASSIFIED_READ.format(mine="true", source=_NEW_AND_GAPS)
_READ_SHARDS = _CLASSIFIED_READ.format(
    mine="pp_shard_of(u.mint, $7) = ANY($6::int[])", source=_NEW_AND_GAPS
)
# A shard's catch-up: every row in (after, upto], the shards' own marked as mine (the
# others' ids still count, so gaps that may commit late are told apart from them).
_READ_SHARD_RANGE = _CLASSIFIED_READ.format(
    mine="pp_shard_of(u.mint, $7) = ANY($6::int[])",
    source=f"""
    SELECT {_COLUMNS} FROM coin_metrics WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3
    """,
)

AnyRow = TickRow | UnusableRow | ForeignRow


async def read_ticks(
    conn: asyncpg.Connection,
    after_id: int,
    gap_ids: Sequence[int],
    limit: int,
    latest: datetime,
    *,
    shards: Sequence[int] | None = None,
    shard_count: int = 1,
) -> list[AnyRow]:
    """Rows with id > after_id, plus the given older ids (gaps that may commit late),
    in id order; a row dated after `latest` (or unusable otherwise) as an UnusableRow.
    With `shards`, a row of another shard comes back as a ForeignRow."""
    if shards is None:
        rows = await conn.fetch(_READ_ALL, after_id, list(gap_ids), limit, EARLIEST_TICK, latest)
    else:
        rows = await conn.fetch(
            _READ_SHARDS,
            after_id,
            list(gap_ids),
            limit,
            EARLIEST_TICK,
            latest,
            list(shards),
            shard_count,
        )
    return _rows(rows)


async def read_shard_range(
    conn: asyncpg.Connection,
    after_id: int,
    upto_id: int,
    shards: Sequence[int],
    shard_count: int,
    limit: int,
    latest: datetime,
) -> list[AnyRow]:
    """The rows with after_id < id <= upto_id in id order, those of other shards as
    ForeignRow: a shard's catch-up when this process takes it over."""
    rows = await conn.fetch(
        _READ_SHARD_RANGE,
        after_id,
        upto_id,
        limit,
        EARLIEST_TICK,
        latest,
        list(shards),
        shard_count,
    )
    return _rows(rows)


def _rows(rows: Sequence[asyncpg.Record]) -> list[AnyRow]:
    return [
        ForeignRow(r["id"])
        if not r["mine"]
        else TickRow(r["id"], r["mint"], r["timestamp"], r["phase_id_at_time"])
        if r["reason"] is None
        else UnusableRow(r["id"], r["mint"], r["timestamp_text"], r["reason"])
        for r in rows
    ]


async def last_id_before(conn: asyncpg.Connection, moment: datetime) -> int:
    """The highest id whose row is older than `moment`, by binary search over the id.

    coin_metrics has no index on timestamp (and may hold months of rows), but ids
    grow with time, so a bisection of primary-key lookups finds the boundary in
    ~40 cheap queries instead of a full scan. Rows that committed out of order
    make the answer approximate by a few rows, which the catch-up bound tolerates.
    """
    return await last_id_older_than(
        conn, table="coin_metrics", time_column='"timestamp"', moment=moment
    )


def _csv_select(columns: Sequence[str], alias: str) -> str:
    """Select list for COPY ... CSV: times as epoch microseconds, booleans as 0/1."""
    parts = []
    for name in columns:
        col = f"{alias}.{quote_ident(name)}"
        if name == "timestamp":
            parts.append(f"(extract(epoch FROM {col}) * 1000000)::bigint AS {quote_ident(name)}")
        elif BASE_COLUMNS[name] == pl.Boolean():
            parts.append(f"{col}::int AS {quote_ident(name)}")
        else:
            parts.append(col)
    return ", ".join(parts)


def _read_schema(schema: Mapping[str, pl.DataType]) -> dict[str, pl.DataType]:
    """The columns as `_csv_select` sends them: times as epoch microseconds, booleans
    as 0/1."""
    return {
        name: (pl.Int64() if name == "timestamp" or dtype == pl.Boolean() else dtype)
        for name, dtype in schema.items()
    }


def _csv_frame(data: bytes, columns: Sequence[str]) -> pl.DataFrame:
    schema = history_schema(columns)
    if not data:
        return pl.DataFrame(schema=schema)
    frame = pl.read_csv(io.BytesIO(data), schema=_read_schema(schema), has_header=True)
    return _typed(frame, schema)


def _record_frame(records: Sequence[asyncpg.Record], columns: Sequence[str]) -> pl.DataFrame:
    """The frame `_csv_frame` makes of the same rows, from asyncpg records.

    A float8 arrives as its exact double, and a numeric as Python's correctly rounded
    float of its text, as Polars parses the text COPY writes: the same values. Built
    column by column from Series (NumPy for the floats: NULL, NaN and infinities become
    missing there) rather than by frame expressions, each a fixed ~0.05-0.1 ms that
    dominated a small read (issue 23).
    """
    schema = history_schema(columns)
    if not records:
        return pl.DataFrame(schema=schema)
    sent = _read_schema(schema)
    series = []
    for (name, dtype), values in zip(schema.items(), zip(*records, strict=True), strict=True):
        if dtype == pl.Float64():
            floats = np.array(values, dtype=np.float64)  # None -> NaN
            floats[~np.isfinite(floats)] = np.nan
            series.append(pl.Series(name, floats, nan_to_null=True))
        else:
            # Times as epoch microseconds and booleans as 0/1 (`_csv_select`); integers
            # through NumPy unless NULL (half the cost of Polars reading the objects).
            as_sent = sent[name]
            if as_sent == pl.Int64() and None not in values:
                column = pl.Series(name, np.array(values, dtype=np.int64))
            else:
                column = pl.Series(name, values, dtype=as_sent)
            series.append(column if as_sent == dtype else column.cast(dtype))
    return pl.DataFrame(series)


def _typed(frame: pl.DataFrame, schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    """Times and booleans from their sent forms; NaN and infinities in float columns
    made missing."""
    casts = [pl.col("timestamp").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")]
    casts += [pl.col(n).cast(pl.Boolean) for n, t in schema.items() if t == pl.Boolean()]
    # NaN, ±Infinity and numerics beyond double (parsed as ±inf) are missing values.
    casts += [
        pl.when(pl.col(n).is_finite()).then(pl.col(n)).alias(n)
        for n, t in schema.items()
        if t == pl.Float64()
    ]
    return frame.with_columns(casts).cast({"timestamp": UTC_TIME})


async def _copy_frame(
    conn: asyncpg.Connection, query: str, args: Sequence[object], columns: Sequence[str]
) -> pl.DataFrame:
    # Collected by a coroutine: given a file object, asyncpg writes every chunk of the
    # COPY through a worker thread, and those hand-offs cost more than the query.
    chunks: list[bytes] = []

    async def collect(chunk: bytes) -> None:
        chunks.append(chunk)

    await conn.copy_from_query(query, *args, output=collect, format="csv", header=True)
    return _csv_frame(b"".join(chunks), columns)


async def _small_or_copy(
    conn: asyncpg.Connection,
    query: str,
    args: Sequence[object],
    columns: Sequence[str],
    coins: int,
) -> pl.DataFrame:
    """A read of at most SMALL_READ_COINS coins as a plain query, a larger one by COPY.

    COPY with parameters costs a second round trip (asyncpg has the server quote
    them) and Polars' CSV reader ~0.8 ms even for 20 rows: most of a small
    batch's history read (issue 23). COPY stays the way for large reads, where
    its text beats building Python values row by row.
    """
    if coins > SMALL_READ_COINS:
        return await _copy_frame(conn, query, args, columns)
    return _record_frame(await conn.fetch(query, *args), columns)


async def load_history(
    conn: asyncpg.Connection,
    mints: Sequence[str],
    as_of: Sequence[datetime],
    rows_per_coin: int,
    columns: Sequence[str] = HISTORY_COLUMNS,
    after: Sequence[datetime | None] | None = None,
) -> pl.DataFrame:
    """Per coin, the newest `rows_per_coin` rows at or before its `as_of` time (and, where
    `after` gives a time, only rows newer than it: the rows a cache does not hold yet).

    Rows after the tick are never read: features "as of" a tick use only its past.
    Rows come grouped per coin but unsorted (the feature engine sorts; sorting wide
    rows in the database cost more than the query itself). Of a duplicated
    (mint, timestamp) only the highest id is read; rows before EARLIEST_TICK never.
    """
    query = f"""
        SELECT {_csv_select(columns, "h")}
        FROM unnest($1::text[], $2::timestamptz[], $4::timestamptz[]) AS t(mint, as_of, after)
        CROSS JOIN LATERAL (
            SELECT DISTINCT ON (c."timestamp") * FROM coin_metrics c
            WHERE c.mint = t.mint AND c."timestamp" <= t.as_of
              AND c."timestamp" > coalesce(t.after, '-infinity'::timestamptz)
              AND c."timestamp" >= $5
            ORDER BY c."timestamp" DESC, c.id DESC
            LIMIT $3
        ) AS h
    """
    newer_than = list(after) if after is not None else [None] * len(mints)
    args = (list(mints), list(as_of), rows_per_coin, newer_than, EARLIEST_TICK)
    return await _small_or_copy(conn, query, args, columns, len(mints))


async def load_rows_before(
    conn: asyncpg.Connection, mints: Sequence[str], boundaries: Sequence[datetime]
) -> pl.DataFrame:
    """Per coin, every row strictly before its boundary, with only the prefix columns.

    Used once per coin (first sight, or after its window jumped): afterwards the
    batcher carries the running state forward from rows it already holds. The same
    rows as `load_history` would read: highest id per (mint, timestamp), none before
    EARLIEST_TICK.
    """
    query = f"""
        SELECT {_csv_select(PREFIX_INPUT_COLUMNS, "c")}
        FROM (
            SELECT DISTINCT ON (c.mint, c."timestamp") c.*
            FROM unnest($1::text[], $2::timestamptz[]) AS b(mint, boundary)
            JOIN coin_metrics c ON c.mint = b.mint AND c."timestamp" < b.boundary
            WHERE c."timestamp" >= $3
            ORDER BY c.mint, c."timestamp", c.id DESC
        ) AS c
        ORDER BY c.mint, c."timestamp"
    """
    args = (list(mints), list(boundaries), EARLIEST_TICK)
    return await _copy_frame(conn, query, args, PREFIX_INPUT_COLUMNS)


async def latest_timestamp(conn: asyncpg.Connection, mint: str) -> datetime | None:
    """The newest readable data timestamp of a coin (manual predictions default to it)."""
    value: datetime | None = await conn.fetchval(
        'SELECT max("timestamp") FROM coin_metrics WHERE mint = $1'
        ' AND "timestamp" >= $2 AND "timestamp" < $3',
        mint,
        EARLIEST_TICK,
        LATEST_READABLE,
    )
    return value


async def row_at_or_before(conn: asyncpg.Connection, mint: str, moment: datetime) -> TickRow | None:
    row = await conn.fetchrow(
        """
        SELECT id, mint, "timestamp", phase_id_at_time FROM coin_metrics
        WHERE mint = $1 AND "timestamp" <= $2 AND "timestamp" >= $3
        ORDER BY "timestamp" DESC, id DESC LIMIT 1
        """,
        mint,
        moment,
        EARLIEST_TICK,
    )
    if row is None:
        return None
    return TickRow(row["id"], row["mint"], row["timestamp"], row["phase_id_at_time"])
