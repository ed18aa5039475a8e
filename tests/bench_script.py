"""Runs a benchmark script of scripts/ the way a user does, on its own embedded database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# `bench.py pipeline` options small enough for a test: correctness, never timing.
TINY_PIPELINE = (
    *("--coins", "8", "--rate", "20", "--seconds", "2", "--models", "2"),
    *("--history-rows", "20", "--baseline-seconds", "1"),
)


def run_script(script: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`python scripts/<script> args...` from the repository; fails the test if it failed."""
    env = {k: v for k, v in os.environ.items() if k != "DB_DSN"}  # its own embedded database
    completed = subprocess.run(
        [sys.executable, f"scripts/{script}", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed
