"""Wait for a condition with a deadline, never sleep for a fixed time and hope."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

T = TypeVar("T")


async def wait_for(
    probe: Callable[[], Awaitable[T] | T],
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - the deadline is the point of this helper
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    """Call `probe` until it returns a truthy value; fail with `what` after `timeout`.

    `probe` may be a coroutine function (a database query) or a plain callable (an
    attribute of an object the test holds): what it returns is awaited when awaitable.
    """
    last: T | None = None
    with anyio.move_on_after(timeout):
        while True:
            result = probe()
            last = await result if inspect.isawaitable(result) else result
            if last:
                return last
            await anyio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")
