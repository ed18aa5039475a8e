"""Replay recorded `coin_metrics` rows (CSV or Parquet) into the database.

    pump-predictor replay day.parquet --speed 10 [--shift-to-now]
    python scripts/replay.py day.csv --speed 0          # as fast as possible

Rows are written in timestamp order (stable, so each coin keeps its recorded
order) and a row recorded `g` seconds after the first one is written `g / speed`
seconds after the replay started; speed 0 or inf writes as fast as the
database takes them. Writes are small multi-row statements, like a collector's,
so the service sees a stream of inserts rather than one huge transaction.

Timestamps: by default every row keeps its recorded timestamp, so the data
(and every feature computed from it) is exactly the recorded day. With
`--shift-to-now` all timestamps move by ONE constant offset so that the first
row is stamped with the start of the replay: the gaps between rows stay as
recorded, features are unchanged, and the service treats the rows as live
(its intake skips rows older than CATCHUP_MAX_AGE_SECONDS, and outcomes are
evaluated on the wall clock). Use `--shift-to-now` with `--speed 1` to re-live
a recorded day; at a higher speed later rows carry timestamps ahead of the clock.

Only `mint`, `timestamp` and the four prices are required; any other collector
column that is missing is written as NULL (the service refuses to predict with
a model that uses a NULL column rather than inventing a value). Columns that
are not collector columns (e.g. `id`) are ignored.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, TextIO

import anyio
import asyncpg
import polars as pl

from features.columns import BASE_COLUMNS, normalise
from storage.config import Settings
from storage.intake.coin_metrics import COLLECTOR_COLUMNS, insert_columns

__all__ = [
    "COLLECTOR_COLUMNS",
    "REQUIRED_COLUMNS",
    "ReplayError",
    "ReplayResult",
    "insert_coin_metrics",
    "read_recording",
    "replay",
]

REQUIRED_COLUMNS: Final[tuple[str, ...]] = (
    "mint",
    "timestamp",
    "price_open",
    "price_high",
    "price_low",
    "price_close",
)
ROWS_PER_STATEMENT: Final = 200


class ReplayError(ValueError):
    """The recording cannot be replayed: missing file, unknown format, missing columns."""


@dataclass(frozen=True, slots=True)
class ReplayResult:
    rows: int
    coins: int
    seconds: float  # wall time of the replay
    first_timestamp: datetime | None  # as written (after any shift)
    last_timestamp: datetime | None
    shifted_by: timedelta  # zero unless shift_to_now


async def insert_coin_metrics(
    executor: asyncpg.Pool | asyncpg.Connection, frame: pl.DataFrame
) -> int:
    """Insert rows of collector columns (missing ones as NULL) in ONE statement; return count.

    Callers keep statements small (a collector writes a few rows at a time);
    row order within the frame becomes id order in the table.
    """
    if frame.is_empty():
        return 0
    frame = _conform(frame)
    args = [frame[c].to_list() for c in COLLECTOR_COLUMNS]
    await insert_columns(executor, args)
    return frame.height


def _conform(frame: pl.DataFrame) -> pl.DataFrame:
    """All collector columns in catalogue types and order; NaN/inf become NULL."""
    frame = normalise(frame)
    exprs: list[pl.Expr] = []
    for name in COLLECTOR_COLUMNS:
        dtype = BASE_COLUMNS[name]
        if name not in frame.columns:
            exprs.append(pl.lit(None, dtype).alias(name))
        elif dtype == pl.Float64():
            col = pl.col(name)
            exprs.append(pl.when(col.is_finite()).then(col).otherwise(None).alias(name))
        else:
            exprs.append(pl.col(name).cast(dtype))
    return frame.select(exprs)


# --------------------------------------------------------------------------- reading


def _coerce_booleans(frame: pl.DataFrame) -> pl.DataFrame:
    """CSV writers spell booleans many ways (True, t, 1); map them, refuse nothing silently."""
    exprs = []
    for name, dtype in BASE_COLUMNS.items():
        if dtype == pl.Boolean() and name in frame.columns and frame.schema[name] != dtype:
            text = pl.col(name).cast(pl.String).str.strip_chars().str.to_lowercase()
            exprs.append(
                text.replace_strict(
                    {"true": True, "t": True, "1": True, "false": False, "f": False, "0": False},
                    default=None,
                    return_dtype=pl.Boolean,
                ).alias(name)
            )
    return frame.with_columns(exprs) if exprs else frame


def read_recording(path: str | Path) -> pl.DataFrame:
    """The recording's collector columns, typed, sorted by timestamp (per-coin order kept)."""
    source = Path(path)
    if not source.is_file():
        raise ReplayError(f"{source}: no such file")
    suffix = source.suffix.lower()
    try:
        if suffix == ".csv":
            # Read text as text: a mint that looks like a number must stay a string.
            frame = pl.read_csv(
                source, schema_overrides={"mint": pl.String, "timestamp": pl.String}
            )
        elif suffix in (".parquet", ".pq"):
            frame = pl.read_parquet(source)
        else:
            raise ReplayError(
                f"{source}: unknown format {suffix or '(no extension)'!r}; "
                "expected .csv, .parquet or .pq"
            )
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise ReplayError(f"{source}: cannot read the recording ({exc})") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ReplayError(
            f"{source}: missing required column(s): {', '.join(missing)} "
            f"(required: {', '.join(REQUIRED_COLUMNS)})"
        )
    frame = _coerce_booleans(frame.select([c for c in COLLECTOR_COLUMNS if c in frame.columns]))
    try:
        frame = _conform(frame)
    except pl.exceptions.PolarsError as exc:
        raise ReplayError(f"{source}: a column has values of the wrong type ({exc})") from exc
    bad = frame.filter(pl.col("mint").is_null() | pl.col("timestamp").is_null()).height
    if bad:
        raise ReplayError(f"{source}: {bad} row(s) without a mint or a timestamp")
    return frame.sort("timestamp", maintain_order=True)


def missing_optional_columns(path: str | Path) -> list[str]:
    """Collector columns the recording lacks (they are written as NULL)."""
    source = Path(path)
    if source.suffix.lower() == ".csv":
        names = pl.read_csv(source, n_rows=0).columns
    else:
        names = list(pl.read_parquet_schema(source))
    return [c for c in COLLECTOR_COLUMNS if c not in names]


# --------------------------------------------------------------------------- progress


class _Progress:
    """One status line on stderr: rows, coins, rate, ETA (rewritten in place on a terminal)."""

    def __init__(self, total: int, stream: TextIO, enabled: bool) -> None:
        self.total = total
        self.stream = stream
        self.enabled = enabled
        self.tty = stream.isatty()
        self.started = time.monotonic()
        self.last_print = 0.0

    def update(self, rows: int, coins: int, remaining_schedule: float, *, final: bool) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        every = 0.25 if self.tty else 5.0
        if not final and now - self.last_print < every:
            return
        self.last_print = now
        elapsed = max(now - self.started, 1e-9)
        rate = rows / elapsed
        remaining = self.total - rows
        eta = max(remaining / rate if rate > 0 else math.inf, remaining_schedule)
        eta_text = "--:--:--" if not math.isfinite(eta) else str(timedelta(seconds=round(eta)))
        pct = 100.0 * rows / self.total if self.total else 100.0
        line = (
            f"replay: {rows}/{self.total} rows ({pct:.0f}%), {coins} coins, "
            f"{rate:.0f} rows/s, ETA {eta_text}"
        )
        if self.tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


# --------------------------------------------------------------------------- replay


async def replay(
    pool: asyncpg.Pool | asyncpg.Connection,
    path: str | Path | pl.DataFrame,
    speed: float,
    *,
    shift_to_now: bool = False,
    progress: bool = True,
    stream: TextIO | None = None,
) -> ReplayResult:
    """Write the recording's rows into coin_metrics, gaps scaled by `speed` (0/inf: no waits).

    `path` may also be a frame returned by `read_recording` (read once, check, then replay).
    """
    if math.isnan(speed) or speed < 0:
        raise ReplayError(f"speed must be >= 0 (0 or inf: as fast as possible), got {speed}")
    frame = path if isinstance(path, pl.DataFrame) else read_recording(path)
    unpaced = speed == 0 or math.isinf(speed)
    started_at = datetime.now(UTC)
    started = time.monotonic()
    shift = timedelta(0)
    if frame.height and shift_to_now:
        shift = started_at - frame["timestamp"][0]
        frame = frame.with_columns(pl.col("timestamp") + shift)

    # Seconds after the start at which each row is due.
    if frame.height:
        offsets = (
            (frame["timestamp"] - frame["timestamp"][0]).dt.total_microseconds() / 1e6
        ).to_list()
    else:
        offsets = []
    due: list[float] = [0.0] * frame.height if unpaced else [o / speed for o in offsets]

    meter = _Progress(frame.height, stream or sys.stderr, progress)
    seen: set[str] = set()
    written = 0
    mints: Sequence[Any] = frame["mint"].to_list()
    while written < frame.height:
        wait = due[written] - (time.monotonic() - started)
        if wait > 0:
            await anyio.sleep(wait)
        elapsed = time.monotonic() - started
        end = written + 1
        # Everything already due goes in the same (small) statement.
        while end < frame.height and end - written < ROWS_PER_STATEMENT and due[end] <= elapsed:
            end += 1
        await insert_coin_metrics(pool, frame.slice(written, end - written))
        seen.update(mints[written:end])
        written = end
        remaining_schedule = 0.0 if written >= frame.height else max(0.0, due[-1] - elapsed)
        meter.update(written, len(seen), remaining_schedule, final=False)
    meter.update(written, len(seen), 0.0, final=True)
    return ReplayResult(
        rows=written,
        coins=len(seen),
        seconds=time.monotonic() - started,
        first_timestamp=frame["timestamp"][0] if frame.height else None,
        last_timestamp=frame["timestamp"][-1] if frame.height else None,
        shifted_by=shift,
    )


# --------------------------------------------------------------------------- command line


def parse_speed(text: str) -> float:
    """`10`, `0.5`, `0`, `inf` or `max` (the last three: as fast as possible)."""
    if text.strip().lower() in ("max", "inf", "infinity"):
        return math.inf
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a speed: {text!r}") from None
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(f"speed must be >= 0, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="recorded coin_metrics rows (.csv or .parquet)")
    parser.add_argument(
        "--speed",
        type=parse_speed,
        default=1.0,
        help="time scale: 1 = recorded pace, 10 = ten times faster, 0 or inf = no waiting",
    )
    parser.add_argument(
        "--shift-to-now",
        action="store_true",
        help="move all timestamps by one offset so the first row is stamped now",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress line")


def describe(result: ReplayResult) -> str:
    text = f"replayed {result.rows} rows of {result.coins} coins in {result.seconds:.1f}s"
    if result.shifted_by:
        text += f" (timestamps shifted by {result.shifted_by})"
    return text


def check_before_replay(path: str | Path, speed: float, shift_to_now: bool) -> list[str]:
    """Warnings worth printing before a long replay starts."""
    warnings = []
    missing = missing_optional_columns(path)
    if missing:
        warnings.append(f"columns missing in the recording, written as NULL: {', '.join(missing)}")
    if shift_to_now and speed > 1:
        warnings.append(
            "--shift-to-now with a speed above 1: later rows get timestamps ahead of the clock"
        )
    return warnings


async def replay_command(
    settings: Settings, file: str, *, speed: float, shift_to_now: bool, progress: bool
) -> int:
    """`pump-predictor replay`: replay into the configured database; return the exit code."""
    from storage.db.database import migrate, open_database, open_pool

    try:
        # Read (and refuse) the recording before starting any database.
        recording = read_recording(file)
    except ReplayError as error:
        print(f"replay: {error}", file=sys.stderr)
        return 2
    for warning in check_before_replay(file, speed, shift_to_now):
        print(f"replay: warning: {warning}", file=sys.stderr)
    database = await open_database(settings)
    try:
        await migrate(database.dsn, embedded=settings.embedded)
        pool = await open_pool(settings, database.dsn)
        try:
            result = await replay(
                pool, recording, speed, shift_to_now=shift_to_now, progress=progress
            )
        finally:
            await pool.close()
    finally:
        await database.close()
    print(describe(result))
    return 0


if __name__ == "__main__":
    from storage.config import load_settings

    cli = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    cli.add_argument("--config", help="path of config.toml (default: the repository's)")
    add_arguments(cli)
    parsed = cli.parse_args()
    sys.exit(
        anyio.run(
            lambda: replay_command(
                load_settings(parsed.config),
                parsed.file,
                speed=parsed.speed,
                shift_to_now=parsed.shift_to_now,
                progress=not parsed.quiet,
            )
        )
    )
