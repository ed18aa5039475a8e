"""`pump-predictor backtest`: what a model would have alerted on, and how those alerts did.

The model comes through the import's checks without being activated
(`storage.models.model_import.load_checked_model`); the rows from `coin_metrics`
or from a recording read as `replay` reads it. Prints a summary per model,
with `--json` one JSON object as the last line of stdout; `--out` writes
every scored tick (CSV or Parquet by the extension).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import polars as pl
from tqdm import tqdm

from actors.backtest.engine import BacktestModel, ModelRun, Stopwatch, summarize
from actors.backtest.run import range_ticks, run_on_database, run_on_frame
from actors.errors import ActorError
from storage.backtests.store import TICK_COLUMNS
from storage.config import Settings
from storage.db.database import migrate, open_database, open_pool
from storage.models.model_import import ModelImportError, client_from_settings, load_checked_model

OUT_SUFFIXES = (".csv", ".parquet", ".pq")


class BacktestUsageError(ActorError, ValueError):
    """A command-line value that cannot be used; the message names the option."""

    code = "invalid_option"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        type=int,
        action="append",
        required=True,
        metavar="ID",
        help="Training Service model id (as in /api/models/available); repeat for several",
    )
    parser.add_argument("--from", dest="start", help="first tick time (ISO 8601, UTC if naive)")
    parser.add_argument("--to", dest="end", help="last tick time (ISO 8601, UTC if naive)")
    parser.add_argument(
        "--source", help="recorded coin_metrics rows (.csv, .parquet) instead of the database"
    )
    parser.add_argument("--out", help="write every scored tick here (.csv or .parquet)")
    parser.add_argument(
        "--json", action="store_true", help="print the summary as one JSON object (last line)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def parse_time(option: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise BacktestUsageError(f"{option}: not an ISO 8601 time: {text!r}") from exc
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _check_out(path: str | None) -> None:
    if path is not None and Path(path).suffix.lower() not in OUT_SUFFIXES:
        raise BacktestUsageError(f"--out: expected a .csv or .parquet file name, got {path!r}")


def write_ticks(runs: Sequence[ModelRun], path: str) -> int:
    """One row per scored tick (with `model_id` first when several models ran)."""
    frames = []
    for run in runs:
        frame = run.ticks().select(TICK_COLUMNS)
        if len(runs) > 1:
            frame = frame.select(pl.lit(run.model.model_id).alias("model_id"), pl.all())
        frames.append(frame)
    ticks = pl.concat(frames, how="vertical")
    target = Path(path)
    if target.suffix.lower() == ".csv":
        ticks.write_csv(target)
    else:
        ticks.write_parquet(target)
    return ticks.height


def _number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def describe(summary: dict[str, Any]) -> str:
    """The summary for a person: headline numbers, then the thresholds table."""
    lines = [
        f"model {summary['model_id']} ({summary['name']}), alert threshold "
        f"{summary['alert_threshold']}",
        f"  ticks {summary['ticks']}  coins {summary['coins']}  alerts {summary['alerts']}  "
        f"evaluated {summary['evaluated']}  pending {summary['pending']}",
        f"  precision {_number(summary['precision'])}  recall {_number(summary['recall'])}  "
        f"f1 {_number(summary['f1'])}",
        "  threshold  alerts  precision  mean change %  alerts/hour",
    ]
    for row in summary["thresholds"]:
        lines.append(
            f"  {row['threshold']:>9.2f}  {row['alerts']:>6}  {_number(row['precision']):>9}  "
            f"{_number(row['mean_change_pct'], 2):>13}  {_number(row['alerts_per_hour'], 2):>11}"
        )
    if summary["skipped"]:
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(summary["skipped"].items()))
        lines.append(f"  skipped ticks: {skipped}")
    lines.append(f"  {summary['seconds']} s")
    return "\n".join(lines)


async def backtest_command(
    settings: Settings, args: argparse.Namespace, *, out: TextIO = sys.stdout
) -> int:
    try:
        start = parse_time("--from", args.start)
        end = parse_time("--to", args.end)
        if start is not None and end is not None and start > end:
            raise BacktestUsageError("--from: must not be after --to")
        _check_out(args.out)
        recording = None
        if args.source is not None:
            from actors.runtime.tools import load_script

            replay = load_script("replay")
            try:
                recording = replay.read_recording(args.source)
            except replay.ReplayError as exc:
                raise BacktestUsageError(f"--source: {exc}") from exc
    except BacktestUsageError as exc:
        print(f"backtest: {exc}", file=sys.stderr)
        return 2
    clock = Stopwatch()
    database = await open_database(settings)
    try:
        await migrate(database.dsn, embedded=settings.embedded)
        pool = await open_pool(settings, database.dsn)
        try:
            client = client_from_settings(settings)
            try:
                models = [
                    BacktestModel.from_checked(
                        await load_checked_model(pool, settings, client, model_id)
                    )
                    for model_id in dict.fromkeys(args.model)
                ]
            except ModelImportError as exc:
                print(f"backtest: {exc.message}", file=sys.stderr)
                return 1
            finally:
                await client.aclose()
            bar = tqdm(total=0, unit="tick", file=sys.stderr, disable=args.quiet, desc="backtest")
            try:

                def on_total(n: int) -> None:
                    bar.total = n
                    bar.refresh()

                if recording is not None:
                    on_total(range_ticks(recording, start, end))
                    runs = await run_on_frame(
                        recording, models, start=start, end=end, progress=bar.update
                    )
                else:
                    runs = await run_on_database(
                        pool,
                        models,
                        start=start,
                        end=end,
                        grace_seconds=settings.evaluation_grace_seconds,
                        progress=bar.update,
                        on_total=on_total,
                    )
            finally:
                bar.close()
        finally:
            await pool.close()
    finally:
        await database.close()
    if args.out is not None:
        written = write_ticks(runs, args.out)
        print(f"wrote {written} tick(s) to {args.out}", file=sys.stderr)
    seconds = clock.seconds
    summaries = [summarize(run, start=start, end=end, seconds=seconds) for run in runs]
    for summary in summaries:
        print(describe(summary), file=out)
    if args.json:
        document = (
            summaries[0]
            if len(summaries) == 1
            else {
                "models": summaries,
                "seconds": round(seconds, 3),
            }
        )
        print(json.dumps(document, allow_nan=False), file=out)
    return 0
