"""What the limited probe process adds to a model import, and what plain spawn would.

Every import (and reload, and backtest download) first loads and probes the
file in a child process (storage.model_files.probe). Measured here on a model like
the Training Service's (RandomForest, 100 trees, 11 features): the first probe
(the forkserver starts and imports scikit-learn and XGBoost), the following
ones (a fork each), one plain `spawn` child per probe (the alternative), and
the in-process load every import does anyway.

    .venv/bin/python scripts/bench_model_probe.py
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

from model_factory import train_model

from storage.model_files import probe as model_probe
from storage.model_files.store import load_model

FEATURES = [f"f{i}" for i in range(11)]
LIMITS = {"max_bytes": 200_000_000, "memory_bytes": 2_000_000_000}


def _probe(path: Path) -> float:
    started = time.perf_counter()
    model_probe.probe_in_child(path, timeout_seconds=120.0, **LIMITS)
    return time.perf_counter() - started


def _spawn_probe(path: Path) -> float:
    """The same child function, started with plain spawn (a fresh interpreter each time)."""
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(
        target=model_probe._child,
        args=(str(path), LIMITS["max_bytes"], LIMITS["memory_bytes"], 120.0, sender),
    )
    child.start()
    sender.close()
    verdict = receiver.recv()
    child.join()
    assert verdict[0] == "ok", verdict
    return time.perf_counter() - started


def _load(path: Path) -> float:
    started = time.perf_counter()
    load_model(path)
    return time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = train_model(
            "random_forest", FEATURES, n_estimators=100, path=Path(directory) / "rf.pkl"
        )
        first = _probe(path)
        forked = [_probe(path) for _ in range(5)]
        spawned = [_spawn_probe(path) for _ in range(3)]
        loads = [_load(path) for _ in range(5)]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average {load} on {os.cpu_count()} cores")
    print(f"first probe (forkserver start):  {first:6.2f} s")
    print(f"next probes (median of 5):       {statistics.median(forked) * 1000:6.0f} ms")
    print(f"plain spawn per probe (median):  {statistics.median(spawned):6.2f} s")
    print(f"in-process load (median of 5):   {statistics.median(loads) * 1000:6.0f} ms")


if __name__ == "__main__":
    main()
