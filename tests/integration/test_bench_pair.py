"""`scripts/bench_pair.py`: the same bench in a reference worktree and this tree, as ratios.

Correctness only: tiny runs against this very commit (so the ratios are whatever the
box gives), never an assertion on their size.
"""

from __future__ import annotations

import json
import subprocess
import sys

from bench_script import REPO, TINY_PIPELINE, run_script

from scripts.bench_pair import FIGURES, ratios, summary


def _worktrees() -> list[str]:
    listed = subprocess.run(
        ["git", "worktree", "list", "--porcelain"], cwd=REPO, capture_output=True, text=True
    )
    return [line for line in listed.stdout.splitlines() if line.startswith("worktree ")]


def test_ratios_are_this_tree_over_the_reference_per_pair_and_skip_what_is_missing() -> None:
    pairs = [
        (
            {"service_cpu_ms_per_tick": 2.0, "pg_cpu_ms_per_tick": 0.5, "p50_ms": 10},
            {"service_cpu_ms_per_tick": 1.0, "pg_cpu_ms_per_tick": 0.25, "p50_ms": 30},
        ),
        (
            {"service_cpu_ms_per_tick": 1.0, "pg_cpu_ms_per_tick": 0.0, "p50_ms": 10},
            {"service_cpu_ms_per_tick": 0.7, "pg_cpu_ms_per_tick": None, "p50_ms": 10},
        ),
    ]
    per_figure = ratios(pairs)
    assert per_figure["service_cpu_ms_per_tick"] == [0.5, 0.7]
    assert per_figure["pg_cpu_ms_per_tick"] == [0.5]  # a 0 or missing value gives no ratio
    assert per_figure["p50_ms"] == [3.0, 1.0]
    assert per_figure["p99_ms"] == []
    assert summary(per_figure) == {
        "service_cpu_ms_per_tick": 0.6,
        "pg_cpu_ms_per_tick": 0.5,
        "p50_ms": 2.0,
        "p99_ms": None,
        "webhook_p50_ms": None,
        "webhook_p99_ms": None,
    }


def test_a_pair_runs_in_a_temporary_worktree_and_reports_every_ratio() -> None:
    before = _worktrees()
    completed = run_script(
        "bench_pair.py",
        "--reference",
        "HEAD",
        "--pairs",
        "1",
        "--json",
        "--",
        *TINY_PIPELINE,
        timeout=240,
    )
    lines = completed.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == [
        "pair 1 reference HEAD",
        "pair 1 this tree",
    ]
    assert all("lost 0, duplicated 0" in line for line in lines[:2])
    result = json.loads(lines[-1])
    for name in FIGURES:
        assert len(result["ratios"][name]) == 1 and result["ratios"][name][0] > 0, name
        assert result["median"][name] == round(result["ratios"][name][0], 3)
    assert _worktrees() == before  # the reference's worktree is gone


def test_an_unknown_reference_is_refused_in_one_line() -> None:
    completed = subprocess.run(
        [sys.executable, "scripts/bench_pair.py", "--reference", "no-such-commit-xyz"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 2
    assert "--reference 'no-such-commit-xyz' is not a commit of this repository" in (
        completed.stderr
    )
