"""CPU work of a batch: inline on the event loop when small, in a worker thread when large.

Ten predictors each handing a few milliseconds of NumPy work to threads made
the threads and the event loop fight over the GIL: every socket write of the
loop released it and then waited up to the switch interval (5 ms) to get it
back. Below `INLINE_MAX_ROWS` the work costs less than that wait, so it runs
inline; only very large batches go to a thread so the loop keeps answering.

The bound was 64 rows; at 500 rows/s batches hold ~100 coins, so ten models
scored in threads and the convoy came back: with 1000, insert->prediction
p50/p99 at 500 rows/s went from 0.70/1.12 s to 0.44/0.73 s and the summed
predictor batch time from 133 to 58 s. The longest inline step is a forest
over 1000 rows, ~25 ms.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, TypeVarTuple, Unpack

import anyio
import anyio.lowlevel

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

# Rows (ticks, or coins for features) handled inline; measured with scripts/bench.py.
INLINE_MAX_ROWS = 1000


async def run_cpu(rows: int, fn: Callable[[Unpack[Ts]], T], *args: *Ts) -> T:
    if rows <= INLINE_MAX_ROWS:
        await anyio.lowlevel.checkpoint()
        return fn(*args)
    return await anyio.to_thread.run_sync(fn, *args)
