"""`scripts/bench.py pipeline` runs end to end and its own checks find nothing lost or doubled.

Correctness only: tiny numbers, never an assertion on timing.
"""

from __future__ import annotations

import json

from bench_script import TINY_PIPELINE, run_script

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
    completed = run_script("bench.py", "pipeline", *TINY_PIPELINE, "--json", timeout=120)
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
