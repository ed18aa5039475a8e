"""One stream batch's Python after the features: scoring, stored rows, webhook items and jobs.

The pipeline benchmark (scripts/bench.py) measures the whole service, where this
part is ~0.3 ms of CPU per coin tick among many others and under the noise of
a shared box. Here one realistic batch (20 coins, the benchmark's 10 models:
5 XGBoost, 5 RandomForest, 40 of the same shared features each) goes through
exactly the service's functions in a loop, and the CPU time per batch is
printed per step:

    .venv/bin/python scripts/bench_scoring.py [--coins 20] [--models 10] [--seconds 3]
    .venv/bin/python scripts/bench_scoring.py --compare /path/to/other/tree

`--compare` runs the same measurement with another tree's code (a subprocess
with its sources first on the path; the same models and rows) alternately with
this tree's, three times each, and prints both, so that before/after figures
come from one run on the same box.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

MODELS_DIR = Path("/tmp/bench_scoring_models")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _bench_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "_bench", Path(__file__).resolve().parent / "bench.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["_bench"] = module
    spec.loader.exec_module(module)
    return module


def _trained(count: int) -> list[dict[str, Any]]:
    """The benchmark's models, trained once and kept in MODELS_DIR between runs."""
    index = MODELS_DIR / f"models_{count}.json"
    if index.exists():
        loaded: list[dict[str, Any]] = json.loads(index.read_text())
        return loaded
    models: list[dict[str, Any]] = _bench_module().train_models(count, MODELS_DIR)
    index.write_text(json.dumps(models))
    return models


def _row(model: dict[str, Any], sha256: str, active_model_id: int) -> dict[str, Any]:
    """An active_models row as the service reads it (webhooks on, every send mode)."""
    return {
        "id": active_model_id,
        "model_id": model["id"],
        "name": model["name"],
        "custom_name": None,
        "model_type": model["model_type"],
        "features": model["features"],
        "params": model["params"],
        "phases": None,
        "alert_threshold": 0.7,
        "target_kind": "time_based",
        "target_variable": model["target_variable"],
        "target_operator": None,
        "target_value": None,
        "future_minutes": model["future_minutes"],
        "price_change_percent": model["price_change_percent"],
        "target_direction": model["target_direction"],
        "n8n_webhook_url": None,
        "n8n_enabled": True,
        "n8n_send_modes": ["all"],
        "coin_filter_mode": "all",
        "coin_whitelist": None,
        "file_path": model["model_file_path"],
        "file_sha256": sha256,
    }


def measure(coins: int, count: int, seconds: float) -> dict[str, float]:
    """CPU microseconds per batch of each step (and of the whole batch)."""
    from actors.runtime.messages import Tick
    from actors.scoring import batch_writer
    from actors.scoring.batch_writer import ModelScores, batch_rows
    from actors.scoring.model_runtime import build_runtime, score
    from actors.webhooks.payload import ReportedPrediction, tick_jobs, webhook_items
    from features.columns import FEATURE_BASE_COLUMNS
    from features.engineering import HAS_DATA_SUFFIX, engineered_names
    from features.matrix import TickRows
    from storage.model_files.store import load_model

    runtimes = []
    for i, model in enumerate(_trained(count)):
        loaded = load_model(model["model_file_path"])
        runtimes.append(build_runtime(_row(model, loaded.sha256, i + 1), loaded))
    # One feature row per coin, as `features.last_row` gives it: every column of the
    # shared key (windows 5/10/15 and their flags), values like the training data.
    names = [*FEATURE_BASE_COLUMNS, *engineered_names((5, 10, 15))]
    names += [f"{n}{HAS_DATA_SUFFIX}" for n in engineered_names((5, 10, 15)) if n[-1].isdigit()]
    names = list(dict.fromkeys(names))
    rng = np.random.default_rng(7)
    values = rng.normal(size=(coins, len(names)))
    ticks = [
        Tick(i + 1, f"coin{i:04d}", T0 + timedelta(seconds=i), 2, time.time()) for i in range(coins)
    ]
    rows = TickRows(
        values,
        {n: i for i, n in enumerate(names)},
        {(t.coin_id, t.data_timestamp): i for i, t in enumerate(ticks)},
    )

    def fresh_rows() -> TickRows:
        # A batch's rows are new objects (whatever they cache is the batch's own).
        return TickRows(rows.values, rows.columns, rows.index)

    def scores_of(tick_rows: TickRows, kind: str | None = None) -> list[ModelScores]:
        chosen = [r for r in runtimes if kind in (None, r.model.kind)]
        return [ModelScores(r, score(r, ticks, tick_rows)) for r in chosen]

    scores = scores_of(fresh_rows())
    stored = batch_rows(scores)
    items_of: Callable[[], list[Any]]
    if hasattr(batch_writer, "fresh_items"):

        def items_of() -> list[Any]:
            # write_batch's steps for a batch whose predictions were all new.
            items = []
            ticks = batch_writer.tick_texts(stored)
            start = 0
            for runtime, scored in scores:
                positions = range(start, start + len(scored.ticks))
                start = positions.stop
                items += batch_writer.fresh_items(
                    stored, ticks, runtime.webhook, positions, default_url="http://127.0.0.1:1/hook"
                )
            return items
    else:

        def items_of() -> list[Any]:
            items = []
            start = 0
            for runtime, scored in scores:
                positions = range(start, start + len(scored.ticks))
                start = positions.stop
                model = runtime.webhook
                reported = [
                    ReportedPrediction(
                        stored.coin_ids[stored.tick_index[k]],
                        stored.data_timestamps[stored.tick_index[k]],
                        stored.predictions[k],
                        stored.probabilities[k],
                        stored.tags[k],
                        model.alert_threshold,
                    )
                    for k in positions
                ]
                items += webhook_items(model, reported, default_url="http://127.0.0.1:1/hook")
            return items

    items = items_of()
    steps: dict[str, Callable[[], object]] = {
        "score (all models, incl. matrices)": lambda: scores_of(fresh_rows()),
        "  of it XGBoost x5": lambda: scores_of(fresh_rows(), "xgboost"),
        "  of it RandomForest x5": lambda: scores_of(fresh_rows(), "random_forest"),
        "batch_rows": lambda: batch_rows(scores),
        "webhook items": items_of,
        "tick_jobs": lambda: tick_jobs(items),
    }
    result: dict[str, float] = {}
    for name, step in steps.items():
        step()
        runs = 0
        started = time.process_time()
        while (spent := time.process_time() - started) < seconds or runs < 20:
            step()
            runs += 1
        result[name] = spent / runs * 1e6
    result["whole batch"] = sum(v for k, v in result.items() if not k.startswith(" "))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coins", type=int, default=20)
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--compare", type=Path, help="another tree to measure alternately")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.compare is None:
        figures = measure(args.coins, args.models, args.seconds)
        if args.json:
            print(json.dumps(figures))
        else:
            for name, us in figures.items():
                print(f"{name:40s} {us:9.1f} us per batch")
        return
    _trained(args.models)  # before the subprocesses, so that both use the same files
    here = Path(__file__).resolve().parent.parent
    trees = {"other": args.compare.resolve(), "this": here}
    runs: dict[str, list[dict[str, float]]] = {"other": [], "this": []}
    for _ in range(3):
        for label, tree in trees.items():
            command = [sys.executable, str(Path(__file__).resolve()), "--json"]
            command += ["--coins", str(args.coins), "--models", str(args.models)]
            command += ["--seconds", str(args.seconds)]
            out = subprocess.run(
                command,
                cwd=tree,
                env={**os.environ, "PYTHONPATH": str(tree)},
                capture_output=True,
                text=True,
            )
            if out.returncode:
                sys.exit(out.stderr)
            runs[label].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'us per batch (best of 3)':40s} {'other':>9s} {'this':>9s}")
    for name in runs["this"][0]:
        best = {label: min(r[name] for r in rs if name in r) for label, rs in runs.items()}
        print(f"{name:40s} {best['other']:9.1f} {best['this']:9.1f}")


if __name__ == "__main__":
    main()
