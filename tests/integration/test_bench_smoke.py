"""`scripts/bench.py pipeline` runs end to end and its own checks find nothing lost or doubled.

Correctness only: tiny numbers, never an assertion on timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

KEYS = (
    "rows_inserted",
    "rows_processed",
    "lost",
    "duplicated",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "webhook_p99_ms",
    "baseline_ratio",
    "cpu_s",
    "peak_rss_mb",
    "disk_bytes_per_tick",
    "pg_cpu_ms_per_tick",
    "service_cpu_ms_per_tick",
    "evaluation",
    "workers",
    "replicas",
    "shard_moves",
)


def test_bench_pipeline_smoke_reports_every_key_and_no_lost_or_duplicated_row() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DB_DSN"}  # its own embedded database
    completed = subprocess.run(
        [
            sys.executable,
            "scripts/bench.py",
            "pipeline",
            "--coins",
            "8",
            "--rate",
            "20",
            "--seconds",
            "2",
            "--models",
            "2",
            "--history-rows",
            "20",
            "--baseline-seconds",
            "1",
            "--json",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    missing = [k for k in KEYS if k not in result]
    assert not missing, f"missing keys {missing} in {result}"
    assert result["rows_inserted"] > 0
    assert result["rows_processed"] > 0
    assert result["lost"] == 0
    assert result["duplicated"] == 0
    # Every stored prediction was evaluated, and the tables grew by what was stored.
    assert result["evaluation"]["predictions"] >= result["rows_processed"] * 2
    assert result["disk_bytes_per_tick"] > 0
    # The receiver on 127.0.0.1 is reached (the target policy refuses loopback by default).
    assert result["webhook_ticks_delivered"] > 0
