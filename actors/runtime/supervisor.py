"""One task group that runs every actor, restarts the ones that crash, and stops
them in stages on shutdown.

Shutdown follows hypercorn's shape: stop intake first, let in-flight work drain
in stage order within one deadline, then cancel whatever is left. The web server
is the last stage, so `/health` answers while the service drains.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from actors.runtime import metrics
from actors.runtime.state import ServiceState
from storage.db.outages import outage_reason
from storage.refusals import StartupRefused

log = structlog.get_logger(__name__)

# Shutdown stages: lower numbers stop first.
STAGE_INTAKE = 0
STAGE_BATCH = 10
STAGE_PREDICT = 20
STAGE_LEASES = 25  # shard leases: released once the batches in flight are committed
STAGE_OUTPUT = 30
STAGE_BACKGROUND = 40
STAGE_ROLES = 45  # role leases: released once the role's actors (background) stopped
STAGE_WEB = 90

# While the database is down, each actor says so again at most this often (seconds).
OUTAGE_LOG_EVERY = 10.0


@runtime_checkable
class Actor(Protocol):
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None: ...


@runtime_checkable
class Drainable(Protocol):
    """An actor that can finish its in-flight work and return when asked to stop."""

    def request_stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ActorSpec:
    name: str
    factory: Callable[[], Any]
    stage: int = STAGE_BACKGROUND


@dataclass(slots=True)
class _Handle:
    spec: ActorSpec
    actor: Any = None
    scope: anyio.CancelScope | None = None
    stopping: bool = False
    wake: anyio.Event = field(default_factory=anyio.Event)
    done: anyio.Event = field(default_factory=anyio.Event)


class Supervisor:
    """Runs actors in one task group; `spawn` and `stop_actor` work while it runs."""

    def __init__(
        self,
        state: ServiceState | None = None,
        *,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        healthy_after: float = 60.0,
        outage_retry_interval: float = 0.25,
    ) -> None:
        self.state = state or ServiceState()
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.healthy_after = healthy_after
        self._tg: TaskGroup | None = None
        self._handles: dict[str, _Handle] = {}
        self._finished = anyio.Event()
        self._stopping = False
        self.outage_retry_interval = outage_retry_interval
        self._outage_logged_at: dict[str, float] = {}

    @property
    def actor_names(self) -> list[str]:
        return list(self._handles)

    def actor(self, name: str) -> Any:
        """The running instance of an actor (tests and the web layer look at it)."""
        return self._handles[name].actor

    async def run(
        self,
        specs: list[ActorSpec],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for spec in specs:
                if self._stopping:  # a stop during start-up: start nothing more
                    break
                await tg.start(self._supervise, spec)
            task_status.started()
            await self._finished.wait()
            tg.cancel_scope.cancel()

    async def spawn(self, spec: ActorSpec) -> None:
        """Start one more actor and return once it is ready."""
        if self._tg is None:
            raise RuntimeError("supervisor is not running")
        if spec.name in self._handles:
            raise ValueError(f"actor {spec.name!r} is already running")
        await self._tg.start(self._supervise, spec)

    async def stop_actor(self, name: str, *, deadline: float = 10.0, forget: bool = False) -> None:
        """Stop one actor; `forget`: it is gone for good (a deactivated model's
        predictor), so it leaves `actors_up` and its `pp_actor_up` series instead of
        reading "down" for ever."""
        handle = self._handles.get(name)
        if handle is not None:
            await self._stop_handles([handle], deadline)
        if forget:
            for per_actor in (
                self.state.actors_up,
                self.state.actor_up_since,
                self.state.actor_failing_since,
            ):
                per_actor.pop(name, None)
            metrics.ACTOR_UP.values.pop({"actor": name}, None)

    async def shutdown(self, deadline: float) -> None:
        """Stop stage by stage within `deadline` seconds, then cancel the rest."""
        self.state.draining = True
        self._stopping = True
        started = time.monotonic()
        log.info("shutdown_started", deadline_s=deadline)
        with anyio.move_on_after(deadline) as scope:
            for stage in sorted({h.spec.stage for h in self._handles.values()}):
                handles = [h for h in self._handles.values() if h.spec.stage == stage]
                await self._stop_handles(handles, None)
        if scope.cancelled_caught:
            log.warning(
                "shutdown_deadline_exceeded",
                deadline_s=deadline,
                still_running=[n for n, h in self._handles.items() if not h.done.is_set()],
            )
        log.info("shutdown_finished", took_s=round(time.monotonic() - started, 3))
        self._finished.set()

    async def _stop_handles(self, handles: list[_Handle], deadline: float | None) -> None:
        for handle in handles:
            handle.stopping = True
            handle.wake.set()
            if isinstance(handle.actor, Drainable):
                handle.actor.request_stop()
            elif handle.scope is not None:
                handle.scope.cancel()
        with anyio.move_on_after(deadline) as scope:
            for handle in handles:
                await handle.done.wait()
        if scope.cancelled_caught:
            for handle in handles:
                if handle.scope is not None:
                    handle.scope.cancel()
            for handle in handles:
                await handle.done.wait()

    async def _supervise(
        self, spec: ActorSpec, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        handle = _Handle(spec)
        self._handles[spec.name] = handle
        bound = log.bind(actor=spec.name)
        ready_reported = False
        backoff = self.backoff_initial
        outages = 0  # restarts in a row because the database was unavailable
        outage: str | None = None
        try:
            while not handle.stopping:
                began = time.monotonic()
                outage = None
                try:
                    handle.actor = spec.factory()
                    with anyio.CancelScope() as scope:
                        handle.scope = scope
                        async with anyio.create_task_group() as inner:
                            await inner.start(handle.actor.run)
                            self._set_up(spec.name, True)
                            if outages:
                                # The database was the failure (/health says so itself):
                                # back up is healthy at once, not after a grace period.
                                bound.info("actor_resumed", after_outages=outages)
                                self.state.actor_failing_since.pop(spec.name, None)
                                outages = 0
                            if not ready_reported:
                                ready_reported = True
                                task_status.started()
                    if handle.stopping:
                        break
                    bound.warning("actor_exited_unexpectedly")
                except StartupRefused:
                    if not ready_reported:
                        raise  # no restart fixes it: the service refuses to start
                    bound.exception("actor_crashed")
                except Exception as exc:
                    outage = outage_reason(exc)
                    if outage is None:
                        # Logged with context and restarted; the other actors keep running.
                        bound.exception("actor_crashed")
                    else:
                        outages += 1
                        self._warn_outage(spec.name, bound, outage, outages)
                self._set_up(spec.name, False)
                if handle.stopping:
                    break
                if outages and outage is not None:
                    # Waiting for the database: a short fixed interval, not the crash
                    # back-off, so the actor is back within a second of the database.
                    metrics.ACTOR_RESTARTS.inc({"actor": spec.name})
                    with anyio.move_on_after(self.outage_retry_interval):
                        await handle.wake.wait()
                    continue
                metrics.ACTOR_RESTARTS.inc({"actor": spec.name})
                self.state.actor_restarts[spec.name] = (
                    self.state.actor_restarts.get(spec.name, 0) + 1
                )
                if time.monotonic() - began > self.healthy_after:
                    backoff = self.backoff_initial
                bound.info("actor_restarting", backoff_s=backoff)
                with anyio.move_on_after(backoff):
                    await handle.wake.wait()
                backoff = min(backoff * 2, self.backoff_max)
        finally:
            self._set_up(spec.name, False)
            self._handles.pop(spec.name, None)
            handle.done.set()
            if not ready_reported:
                task_status.started()

    def _warn_outage(self, name: str, bound: Any, reason: str, count: int) -> None:
        """One line per actor and outage, then one every OUTAGE_LOG_EVERY seconds."""
        now = time.monotonic()
        if count == 1 or now - self._outage_logged_at.get(name, 0.0) >= OUTAGE_LOG_EVERY:
            self._outage_logged_at[name] = now
            bound.warning("actor_waiting_for_database", reason=reason, attempts=count)

    def _set_up(self, name: str, up: bool) -> None:
        self.state.actor_changed(name, up)
        metrics.ACTOR_UP.set({"actor": name}, 1 if up else 0)
