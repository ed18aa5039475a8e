"""Where the service's CPU goes per coin tick, from a py-spy profile of a bench run.

    py-spy record --pid <service pid> --nonblocking -r 250 -d 20 -f raw -o run.raw
    python scripts/profile_table.py run.raw --ticks 4000 --cpu-s 6.1

(the service pid, ticks and CPU seconds are printed by `scripts/bench.py pipeline`;
record during its measured step). Each sampled stack is put in the first category
whose marker it contains, so a stack that runs a POST inside the dispatcher counts
as the POST, not as the dispatcher; the shares are of the samples, the ms per tick
are the shares of the measured CPU seconds. docs/benchmarks.md (issue 23) has the
table this prints.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence

# (category, markers): the first category with a marker in the stack takes it.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("webhook POST (aiohttp request, response)", ("WebhookDispatcher._post",)),
    ("webhook settlement (batched UPDATE + INSERT)", ("SettlementWriter",)),
    (
        "webhook claim or hand-over + model snapshots",
        ("WebhookDispatcher._claim", "_with_models", "_queue_handed", "WebhookDispatcher.take"),
    ),
    ("webhook: rest of the dispatcher, aiohttp tasks", ("WebhookDispatcher", "aiohttp/")),
    ("building the webhook jobs", ("tick_jobs", "webhook_items", "webhooks/payload.py")),
    ("storing the batch (predictions, jobs, cursor)", ("Batcher._store", "write_batch")),
    ("history load (query, COPY, parse)", ("load_history",)),
    ("history merge (cache)", ("HistoryCache",)),
    (
        "features of the newest row (shared per batch)",
        ("SharedFeatures", "compute_last", "PrefixCache", "WindowStore"),
    ),
    ("scoring: matrix + predict_proba (per model)", ("run_cpu", "score (", "predict_proba")),
    ("predictors: rest", ("Predictor.",)),
    ("batcher: rest", ("Batcher.",)),
    ("intake (listener, poller)", ("Poller.", "Listener.", "poller.py", "listener.py")),
    ("event loop (epoll, callbacks, socket writes)", ("EpollSelector", "_run_once", "Handle._run")),
)
EVENT_LOOP = CATEGORIES[-1][0]


def classify(lines: Sequence[str]) -> tuple[Counter[str], int]:
    counts: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, number = line.rstrip().rpartition(" ")
        if not stack or not number.isdigit():
            continue
        samples = int(number)
        total += samples
        if stack.rsplit(";", 1)[-1].startswith("Runner.run "):
            # uvloop: its loop is native code, sampled with asyncio's Runner on top.
            counts[EVENT_LOOP] += samples
            continue
        for name, markers in CATEGORIES:
            if any(marker in stack for marker in markers):
                counts[name] += samples
                break
        else:
            counts["other"] += samples
    return counts, total


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("raw", help="py-spy record -f raw output")
    parser.add_argument("--ticks", type=int, required=True, help="coin ticks in the step")
    parser.add_argument("--cpu-s", type=float, required=True, help="service CPU in the step")
    args = parser.parse_args(argv)
    with open(args.raw) as fh:
        counts, total = classify(fh.readlines())
    if not total:
        print("no samples", file=sys.stderr)
        return 1
    print("| part | samples | share | ms per tick |")
    print("|---|---|---|---|")
    for name in [n for n, _ in CATEGORIES] + ["other"]:
        share = counts[name] / total
        per_tick = args.cpu_s * 1000 * share / args.ticks
        print(f"| {name} | {counts[name]} | {100 * share:.1f} % | {per_tick:.3f} |")
    print(f"| total | {total} | 100 % | {args.cpu_s * 1000 / args.ticks:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
