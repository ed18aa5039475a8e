"""The loop of actors that sweep the database every few seconds (evaluator, retention).

A sweep that hits a database error is logged and counted, and the next one
starts after the interval as usual: the database being away for a while is
normal for a long-lived service, and what a sweep did before the error stays
done. Anything else is a bug and goes to the supervisor, which restarts the actor.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

import anyio
import asyncpg
import structlog
from anyio.abc import TaskStatus

from actors.runtime.state import ServiceState

# Errors of the database or the way to it: worth trying again on the next sweep.
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)


class PeriodicActor:
    """Runs `sweep()` every `interval` seconds until `request_stop()`; `poke()` runs one now.

    Subclasses name themselves (`name`, also the actor's log context) and the event
    logged for a failed sweep, and count it in their metric (`count_failure`).
    """

    name: ClassVar[str]
    failure_event: ClassVar[str]

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.failed_sweeps = 0  # sweeps that hit a database error (operators and tests look)
        # Set by the service: where /health reads how many sweeps failed in a row.
        self.state: ServiceState | None = None
        self._stopping = False
        self._wake = anyio.Event()
        self._log = structlog.get_logger(type(self).__module__).bind(actor=self.name)

    async def sweep(self) -> object:
        raise NotImplementedError

    def count_failure(self) -> None:
        """Count a failed sweep in the actor's error counter."""
        raise NotImplementedError

    def started_fields(self) -> dict[str, Any]:
        """Logged with `<name>_started`: the settings the actor runs with."""
        return {"interval_s": self.interval}

    def stopped_fields(self) -> dict[str, Any]:
        """Logged with `<name>_stopped`: what this instance did."""
        return {}

    def request_stop(self) -> None:
        """Finish the statement being run, then stop."""
        self._stopping = True
        self._wake.set()

    def reporting_to(self, state: ServiceState) -> Self:
        """Publish the sweeps that failed in a row in `state` (for /health); returns self."""
        self.state = state
        return self

    def _sweep_ended(self, failed: bool) -> None:
        if self.state is not None:
            streak = self.state.sweeps_failed_in_a_row.get(self.name, 0)
            self.state.sweeps_failed_in_a_row[self.name] = streak + 1 if failed else 0

    def poke(self) -> None:
        """Sweep now instead of at the end of the interval."""
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self._log.info(f"{self.name}_started", **self.started_fields())
        task_status.started()
        while not self._stopping:
            try:
                await self.sweep()
            except RETRYABLE_ERRORS as exc:
                self._sweep_ended(failed=True)
                self.failed_sweeps += 1
                self.count_failure()
                self._log.error(
                    self.failure_event,
                    error=f"{type(exc).__name__}: {exc}",
                    failed_sweeps=self.failed_sweeps,
                    retry_in_s=self.interval,
                )
            except Exception:
                self._sweep_ended(failed=True)  # a bug: the supervisor restarts the actor
                raise
            else:
                self._sweep_ended(failed=False)
            if self._stopping:
                break
            with anyio.move_on_after(self.interval):
                await self._wake.wait()
            self._wake = anyio.Event()
        self._log.info(f"{self.name}_stopped", **self.stopped_fields())
