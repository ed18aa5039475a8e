"""`bench.py backtest`: backtest speed and memory, its ratio to POST /api/predict, and the
live pipeline's latency while an API backtest runs in its worker process.

1. Speed: C coins x R rows generated in memory (a recording), M models trained the
   way the bench trains them (40 features, windows 5/10/15, 100 trees), then
   `actors.backtest.run.run_on_frame` for 1 model and for M models, timed, with the
   process's peak RSS (`ru_maxrss`) and the peak of each run alone (VmHWM after a reset).
2. Live (`--live-coins` > 0): the service subprocess with one imported model, `--live-rows`
   history rows per coin; sequential `POST /api/predict` calls give the cost of scoring
   ticks one by one; then the same insert step (`--live-rate` rows/s) runs twice, without
   and with an API backtest of that model over the database running in its worker.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import polars as pl

from actors.backtest.engine import BacktestModel, summarize
from actors.backtest.run import run_on_frame
from features.columns import BASE_COLUMNS
from storage.clients.training_service import ModelInfo
from storage.intake.coin_metrics import COLLECTOR_COLUMNS
from storage.model_files.store import load_model
from storage.models.model_import import CheckedModel


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def reset_peak_rss() -> bool:
    """Start the kernel's peak-RSS count (VmHWM) again from the current RSS (Linux 4.0+),
    so a run's peak is not the generation's. False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def vm_hwm_mb() -> float | None:
    """Peak RSS since the last `reset_peak_rss` (VmHWM of /proc/self/status)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024.0, 1)
    return None


def rss_mb() -> float | None:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024.0, 1)
    return None


def recording(coins: int, rows: int) -> pl.DataFrame:
    """`coins` x `rows` coin_metrics rows (5 s apart), as a recording would hold them."""
    from scripts.bench import CoinWalk, coin_names

    mints = coin_names(coins)
    walk = CoinWalk(mints, seed=11)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    schema = {c: BASE_COLUMNS[c] for c in COLLECTOR_COLUMNS}
    parts = []
    for i in range(rows):
        moment = start + timedelta(seconds=5 * i)
        columns = walk.columns(mints, [moment] * coins)
        parts.append(pl.DataFrame(dict(zip(COLLECTOR_COLUMNS, columns, strict=True)), schema))
    # No rechunk: one copy of the rows at a time (a 10 million row recording is GBs).
    return pl.concat(parts, how="vertical", rechunk=False)


def backtest_models(trained: list[dict[str, Any]]) -> list[BacktestModel]:
    """The bench's trained files through the service's safe loader."""
    models = []
    for obj in trained:
        loaded = load_model(obj["model_file_path"])
        info = ModelInfo.from_mapping(obj)
        checked = CheckedModel(info.id, loaded, tuple(info.features), info, None)
        models.append(BacktestModel.from_checked(checked))
    return models


def speed(coins: int, rows: int, model_count: int, out: Callable[[str], None]) -> dict[str, Any]:
    from scripts.bench import train_models

    result: dict[str, Any] = {"coins": coins, "rows_per_coin": rows}
    with tempfile.TemporaryDirectory(prefix="pp-bench-bt-") as tmp:
        t0 = time.perf_counter()
        trained = train_models(model_count, Path(tmp) / "trained")
        models = backtest_models(trained)
        out(f"trained and loaded {len(models)} models in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    frame = recording(coins, rows)
    out(f"generated {frame.height} rows in {time.perf_counter() - t0:.1f} s; "
        f"peak RSS {peak_rss_mb()} MB")  # fmt: skip
    result["rss_after_generation_mb"] = peak_rss_mb()
    result["recording_rss_mb"] = rss_mb()
    for count in sorted({1, model_count}):
        reset = reset_peak_rss()
        t0, cpu0 = time.perf_counter(), time.process_time()
        runs = anyio.run(lambda c=count: run_on_frame(frame, models[:c], start=None, end=None))
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        ticks = sum(r.ticks().height for r in runs)
        first = summarize(runs[0], start=None, end=None, seconds=seconds)
        line = {
            "models": count,
            "ticks_scored": ticks,
            "seconds": round(seconds, 1),
            "cpu_seconds": round(cpu, 1),
            "load_average_1m": round(os.getloadavg()[0], 1),
            "ticks_per_s": round(ticks / seconds),
            "peak_rss_mb": peak_rss_mb(),
            # The peak of this run alone (recording included), when the kernel lets us
            # reset the count; the recording's RSS before the run is recording_rss_mb.
            "run_peak_rss_mb": vm_hwm_mb() if reset else None,
            "alerts_first_model": first["alerts"],
        }
        out(f"backtest, {count} model(s): {line}")
        result[f"models_{count}"] = line
        del runs
    return result


async def live(args: argparse.Namespace, out: Callable[[str], None]) -> dict[str, Any]:
    """POST /api/predict one by one, and the pipeline with and without an API backtest."""
    import aiohttp

    from scripts.bench import pct, pipeline_setup

    setup = argparse.Namespace(
        coins=args.live_coins, models=1, history_rows=args.live_rows, per_statement=20
    )
    result: dict[str, Any] = {"coins": args.live_coins, "history_rows": args.live_rows}
    with tempfile.TemporaryDirectory(prefix="pp-bench-bt-live-") as tmp:
        async with (
            pipeline_setup(setup, webhooks=False, scratch=Path(tmp), out=out) as (pipe, models),
            aiohttp.ClientSession(pipe.service.api) as http,
        ):
            await pipe.step(min(args.live_rate, 200.0), 2.0)  # warm-up
            times = []
            for i in range(args.predict_calls):
                coin = pipe.mints[i % len(pipe.mints)]
                t0 = time.perf_counter()
                async with http.post("/api/predict", json={"coin_id": coin}) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"POST /api/predict: HTTP {resp.status}")
                times.append(time.perf_counter() - t0)
            per_call = sum(times) / len(times)
            result["predict_one_by_one"] = {
                "calls": len(times),
                "mean_ms": round(per_call * 1000, 2),
                "p50_ms": round((pct(times, 50) or 0) * 1000, 2),
                "ticks_per_s": round(1 / per_call, 1),
            }
            out(f"POST /api/predict one by one: {result['predict_one_by_one']}")

            quiet = await pipe.step(args.live_rate, args.live_seconds)
            result["pipeline_without_backtest"] = _latency(quiet)
            out(f"pipeline at {args.live_rate:g} rows/s, no backtest: "
                f"{result['pipeline_without_backtest']}")  # fmt: skip
            async with http.post("/api/backtests", json={"model_id": models[0]["id"]}) as resp:
                backtest_id = (await resp.json())["id"]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # the worker started and is scoring
                async with http.get(f"/api/backtests/{backtest_id}") as resp:
                    state = await resp.json()
                if state["status"] != "queued" and state["progress"]["ticks_done"] > 0:
                    break
                await anyio.sleep(0.2)
            busy = await pipe.step(args.live_rate, args.live_seconds)
            async with http.get(f"/api/backtests/{backtest_id}") as resp:
                state = await resp.json()
            result["pipeline_with_backtest"] = {
                **_latency(busy),
                "backtest_status_at_step_end": state["status"],
                "backtest_progress_at_step_end": state["progress"],
            }
            out(f"pipeline at {args.live_rate:g} rows/s, API backtest running: "
                f"{result['pipeline_with_backtest']}")  # fmt: skip
            while state["status"] in ("queued", "running"):
                await anyio.sleep(0.5)
                async with http.get(f"/api/backtests/{backtest_id}") as resp:
                    state = await resp.json()
            summary = state["summary"] or {}
            result["api_backtest"] = {
                "status": state["status"],
                "ticks": summary.get("ticks"),
                "seconds": summary.get("seconds"),
                "error": state["error"],
            }
            out(f"API backtest: {result['api_backtest']}")
    return result


def _latency(step: Any) -> dict[str, Any]:
    s = step.summary()
    keys = ("rate", "rows_processed", "lost", "p50_ms", "p95_ms", "p99_ms", "max_ms", "cpu_s")
    return {k: s[k] for k in keys}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--coins", type=int, default=1000, help="coins (default 1000)")
    parser.add_argument("--rows", type=int, default=1000, help="rows per coin (default 1000)")
    parser.add_argument("--models", type=int, default=10, help="models for the shared run (10)")
    parser.add_argument("--live-coins", type=int, default=500, help="0 skips the live part")
    parser.add_argument("--live-rows", type=int, default=300, help="history rows per live coin")
    parser.add_argument("--live-rate", type=float, default=200.0, help="rows/s of the steps")
    parser.add_argument("--live-seconds", type=float, default=15.0, help="seconds per step")
    parser.add_argument("--predict-calls", type=int, default=300, help="POST /api/predict calls")
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")


def run(args: argparse.Namespace, out: Callable[[str], None]) -> dict[str, Any]:
    result: dict[str, Any] = {"command": "backtest"}
    if args.coins and args.rows:
        result["speed"] = speed(args.coins, args.rows, args.models, out)
    if args.live_coins:
        result["live"] = anyio.run(live, args, out)
    one = result.get("speed", {}).get("models_1")
    by_one = result.get("live", {}).get("predict_one_by_one")
    if one and by_one:
        one_by_one_s = one["ticks_scored"] / by_one["ticks_per_s"]
        result["ratio_to_predict_one_by_one"] = round(one_by_one_s / one["seconds"], 1)
        ratio = result["ratio_to_predict_one_by_one"]
        out(f"the same {one['ticks_scored']} ticks one by one through POST /api/predict: "
            f"~{one_by_one_s:.0f} s, {ratio}x the backtest")  # fmt: skip
    return result
