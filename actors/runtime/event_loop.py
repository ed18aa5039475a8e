"""The event loop the service runs on: uvloop where it is installed, else asyncio's.

Under `bench.py pipeline` (200 coin ticks/s, 10 models) a fifth of the service's
CPU was the event loop itself (epoll, callbacks, socket writes: every POST,
query and batch hand-off is several loop iterations). uvloop runs the same
asyncio programs on libuv; measured back to back it cut the service's CPU per
coin tick by ~9 % (docs/benchmarks.md, issue 23). asyncpg, aiohttp and anyio
support it; on a platform without it (Windows) the service runs on asyncio.
"""

from __future__ import annotations

import importlib.util
from typing import Any

__all__ = ["backend_options"]


def backend_options() -> dict[str, Any]:
    """`anyio.run(..., backend_options=...)` for the service's processes."""
    if importlib.util.find_spec("uvloop") is None:
        return {}
    return {"use_uvloop": True}
