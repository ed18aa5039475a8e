"""CPU work of a batch: inline on the event loop when small, in a worker thread when large.

Ten predictors each handing a few milliseconds of NumPy work to threads made
the threads and the event loop fight over the GIL: every socket write of the
loop released it and then waited up to the switch interval (5 ms) to get it
back. Below `INLINE_MAX_ROWS` the work costs less than that wait, so it runs
inline; large batches still go to a thread so the loop keeps answering.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, TypeVarTuple, Unpack

import anyio
import anyio.lowlevel

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

# Rows (ticks, or history rows for features) handled inline; measured with
# scripts/bench.py: a 20-coin batch scores in ~1 ms per model.
INLINE_MAX_ROWS = 64


async def run_cpu(rows: int, fn: Callable[[Unpack[Ts]], T], *args: *Ts) -> T:
    if rows <= INLINE_MAX_ROWS:
        await anyio.lowlevel.checkpoint()
        return fn(*args)
    return await anyio.to_thread.run_sync(fn, *args)
