"""`bench.py pipeline` for this tree and a reference commit, alternately: CPU figures as ratios.

    python scripts/bench_pair.py --reference 817549e --pairs 3 -- \
        --coins 1000 --rate 200 --models 10 --seconds 20 --baseline-seconds 1

This box's speed drifts by a quarter between hours (docs/benchmarks.md, sessions 11-14),
so an absolute CPU figure says little; the same command run right before or after on a
reference tree does. The reference is checked out into a temporary git worktree and
run with this interpreter (its dependencies must match this venv's); the runs
alternate, reference first, and each pair gives a ratio (this tree / reference). Prints
one line per run, then the median ratio of each figure; `--json` adds one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# Figures of `bench.py pipeline --json` compared as ratios (lower is better).
FIGURES = (
    "service_cpu_ms_per_tick",
    "pg_cpu_ms_per_tick",
    "p50_ms",
    "p99_ms",
    "webhook_p50_ms",
    "webhook_p99_ms",
)
# Reported beside them, never compared.
CHECKS = ("lost", "duplicated")


def run_pipeline(tree: Path, bench_args: Sequence[str]) -> dict[str, Any]:
    """One `bench.py pipeline --json` in `tree`; its last output line, parsed."""
    completed = subprocess.run(
        [sys.executable, "scripts/bench.py", "pipeline", *bench_args, "--json"],
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        raise RuntimeError(
            f"bench.py in {tree} failed ({completed.returncode}): {completed.stderr[-2000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def ratios(pairs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]]) -> dict[str, list[float]]:
    """Per figure, this tree's value over the reference's in each (reference, ours) pair;
    a pair where either value is missing or the reference's is 0 gives none."""
    out: dict[str, list[float]] = {name: [] for name in FIGURES}
    for reference, ours in pairs:
        for name in FIGURES:
            ref, now = reference.get(name), ours.get(name)
            if isinstance(ref, int | float) and isinstance(now, int | float) and ref > 0:
                out[name].append(now / ref)
    return out


def summary(per_figure: Mapping[str, Sequence[float]]) -> dict[str, float | None]:
    """The median ratio of each figure (None without a pair)."""
    return {
        name: round(statistics.median(values), 3) if values else None
        for name, values in per_figure.items()
    }


def _line(label: str, result: Mapping[str, Any]) -> str:
    figures = ", ".join(f"{name} {result.get(name)}" for name in (*FIGURES, *CHECKS))
    return f"{label}: {figures}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", required=True, help="commit (or ref) to compare with")
    parser.add_argument("--pairs", type=int, default=3, help="reference/this-tree pairs")
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    parser.add_argument("bench_args", nargs="*", help="after --: bench.py pipeline's options")
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{args.reference}^{{commit}}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if commit.returncode != 0:
        parser.error(f"--reference {args.reference!r} is not a commit of this repository")
    with tempfile.TemporaryDirectory(prefix="pp-bench-pair-") as tmp:
        tree = Path(tmp) / "reference"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "--quiet", str(tree), commit.stdout.strip()],
            cwd=REPO,
            check=True,
        )
        try:
            pairs = []
            for k in range(1, args.pairs + 1):
                reference = run_pipeline(tree, args.bench_args)
                print(_line(f"pair {k} reference {args.reference}", reference), flush=True)
                ours = run_pipeline(REPO, args.bench_args)
                print(_line(f"pair {k} this tree", ours), flush=True)
                pairs.append((reference, ours))
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=False
            )
    per_figure = ratios(pairs)
    medians = summary(per_figure)
    for name in FIGURES:
        shown = ", ".join(f"{v:.3f}" for v in per_figure[name]) or "none"
        print(f"{name}: this tree / reference, median {medians[name]} (pairs: {shown})")
    if args.json:
        print(json.dumps({"reference": args.reference, "ratios": per_figure, "median": medians}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
