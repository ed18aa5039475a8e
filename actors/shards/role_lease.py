"""Run a role's actors in one process at a time among all replicas (storage/intake/role_leases).

Every SHARD_LEASE_SECONDS / 5 the actor extends this process's lease of the
role, or claims it when it is free or expired. While it holds the role it runs
the role's actors (housekeeping: the evaluator and retention) under the
supervisor; when the lease is lost (another process claimed it after this one
missed its heartbeats, or the database was out of reach for a whole lease) it
stops them. A killed holder's role is claimed by another process at its first
heartbeat after the lease expired; a clean stop (SIGTERM) stops the actors
(their stage comes first) and releases the role at once, so another process
claims it at its next heartbeat.

The evaluator and retention stay correct if two processes ran them at once for
a moment (a paused holder whose lease expired): the evaluator claims its page
of due paths `FOR UPDATE SKIP LOCKED`, deletes them from the queue and writes
the outcomes `ON CONFLICT DO NOTHING`; retention's deletes are idempotent. So
the lease saves the duplicated work and needs no fence in their transactions.
"""

from __future__ import annotations

import os
import socket
import time

import anyio
import asyncpg
import structlog
from anyio.abc import TaskStatus

from actors.runtime import metrics
from actors.runtime.periodic import RETRYABLE_ERRORS
from actors.runtime.supervisor import ActorSpec, Supervisor
from storage.intake import role_leases

log = structlog.get_logger(__name__)

HEARTBEATS_PER_LEASE = 5


class RoleLease:
    def __init__(
        self,
        pool: asyncpg.Pool,
        supervisor: Supervisor,
        *,
        role: str,
        holder: str,
        specs: list[ActorSpec],
        lease_seconds: float,
    ) -> None:
        self._pool = pool
        self._supervisor = supervisor
        self.role = role
        self.holder = holder
        self._specs = specs
        self._lease = lease_seconds
        self._interval = lease_seconds / HEARTBEATS_PER_LEASE
        self.generation: int | None = None  # while held
        self._valid_until = 0.0  # monotonic: the lease surely lasts until then
        self._stopping = False
        self._wake = anyio.Event()
        self._log = log.bind(role=role)

    @property
    def held(self) -> bool:
        return self.generation is not None

    def request_stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            await self.round()
            task_status.started()
            while not self._stopping:
                with anyio.move_on_after(self._interval):
                    await self._wake.wait()
                self._wake = anyio.Event()
                if not self._stopping:
                    await self.round()
        finally:
            await self._leave()

    async def round(self) -> None:
        """One heartbeat: extend or claim; start or stop the role's actors to match."""
        if self._supervisor.state.draining and not self.held:
            return  # stopping: claim nothing that would wait for its expiry
        sent = time.monotonic()
        try:
            async with self._pool.acquire() as conn:
                generation = await role_leases.hold(
                    conn, self.role, self.holder, socket.gethostname(), os.getpid(), self._lease
                )
        except RETRYABLE_ERRORS as exc:
            # Unknown whether the lease was extended: it surely lasts until its last
            # known expiry; past it another process may hold the role.
            self._log.warning("role_heartbeat_failed", error=f"{type(exc).__name__}: {exc}")
            if self.held and time.monotonic() >= self._valid_until:
                await self._lost("heartbeats_failed")
            return
        if generation is None:
            if self.held:
                await self._lost("taken_over")
            return
        self._valid_until = sent + self._lease
        if not self.held:
            self.generation = generation
            metrics.ROLE_HELD.set({"role": self.role}, 1)
            metrics.ROLE_MOVES.inc({"role": self.role, "direction": "gained"})
            self._log.info("role_gained", holder=self.holder, generation=generation)
            for spec in self._specs:
                if spec.name not in self._supervisor.actor_names:
                    await self._supervisor.spawn(spec)
        elif self.held:
            self.generation = generation

    async def _lost(self, reason: str) -> None:
        self._log.warning("role_lost", holder=self.holder, reason=reason)
        metrics.ROLE_MOVES.inc({"role": self.role, "direction": "lost"})
        await self._stop_actors()

    async def _stop_actors(self) -> None:
        self.generation = None
        metrics.ROLE_HELD.set({"role": self.role}, 0)
        for spec in self._specs:
            await self._supervisor.stop_actor(spec.name, forget=True)
            # Not this process's health any more: its failures belong to the next holder.
            self._supervisor.state.sweeps_failed_in_a_row.pop(spec.name, None)

    async def _leave(self) -> None:
        """Stop the role's actors, then release the role at once (a clean stop)."""
        if not self.held:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await self._stop_actors()
            try:
                async with self._pool.acquire() as conn:
                    released = await role_leases.release(conn, self.role, self.holder)
            except RETRYABLE_ERRORS as exc:
                # The lease expires on its own: another process claims it after that.
                self._log.warning("role_release_failed", error=f"{type(exc).__name__}: {exc}")
                return
            if released:
                metrics.ROLE_MOVES.inc({"role": self.role, "direction": "released"})
            self._log.info("role_released", holder=self.holder, released=released)
