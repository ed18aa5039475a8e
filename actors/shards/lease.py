"""Hold a fair share of the coin shards: heartbeat, claim, release (storage/intake/shard_leases).

Every SHARD_LEASE_SECONDS / 5 the actor extends this process's leases and counts
the live holders; it claims free or expired shards up to its fair share
(SHARD_COUNT / holders, rounded up) and releases those above it, so a replica
that starts gets its share within a few heartbeats and a dead holder's shards
are taken once its leases expire (SHARD_LEASE_SECONDS after its last
heartbeat). A lease that vanished (this process was paused past its expiry and
another took the shard) is dropped here and fenced in the storing transaction.
On a clean stop (SIGTERM) it releases every shard at once; it stops after the
batcher, so the batches in flight are committed under the lease first.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime

import anyio
import asyncpg
import structlog
from anyio.abc import TaskStatus

from actors.runtime import metrics
from actors.shards.shard_set import ShardSet
from storage.config import Settings
from storage.intake import shard_leases

log = structlog.get_logger(__name__)

HEARTBEATS_PER_LEASE = 5


class ShardLeases:
    def __init__(self, pool: asyncpg.Pool, shards: ShardSet, *, lease_seconds: float) -> None:
        self._pool = pool
        self._shards = shards
        self._lease = lease_seconds
        self._interval = lease_seconds / HEARTBEATS_PER_LEASE
        self._stopping = False
        self._wake = anyio.Event()
        self._started_at: datetime | None = None  # the database's clock at the first beat

    @classmethod
    def from_settings(cls, settings: Settings, pool: asyncpg.Pool, shards: ShardSet) -> ShardLeases:
        return cls(pool, shards, lease_seconds=settings.shard_lease_seconds)

    def request_stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self.round()
        task_status.started()
        while not self._stopping:
            with anyio.move_on_after(self._interval):
                await self._wake.wait()
            if not self._stopping:
                await self.round()
        await self._leave()

    async def round(self) -> None:
        """One heartbeat: extend, notice losses, then claim or release toward the fair share."""
        shards = self._shards
        async with self._pool.acquire() as conn:
            if self._started_at is None:
                self._started_at = await conn.fetchval("SELECT now()")
            beat = await shard_leases.heartbeat(
                conn, shards.holder, socket.gethostname(), os.getpid(), self._lease
            )
            held = beat.held
            lost = {s for s, g in shards.held.items() if held.get(s) != g}
            if lost:
                metrics.SHARD_MOVES.add({"direction": "lost"}, len(lost))
                log.warning("shard_leases_lost", shards=sorted(lost))
            target = shard_leases.fair_share(shards.shard_count, beat.live_holders)
            if len(held) > target:
                extra = sorted(held)[target:]
                released = await shard_leases.release(conn, shards.holder, extra)
                for shard in released:
                    held.pop(shard, None)
                if released:
                    metrics.SHARD_MOVES.add({"direction": "released"}, len(released))
                    log.info("shards_released", shards=released, fair_share=target)
            elif len(held) < target:
                claimed = await shard_leases.claim(
                    conn, shards.holder, target - len(held), self._lease, self._started_at
                )
                gained = claimed.generations
                held.update(gained)
                shards.orphaned |= claimed.orphaned
                if gained:
                    metrics.SHARD_MOVES.add({"direction": "gained"}, len(gained))
                    log.info(
                        "shards_claimed",
                        shards=sorted(gained),
                        held=len(held),
                        fair_share=target,
                        holders=beat.live_holders,
                    )
        shards.set_held(held)

    async def _leave(self) -> None:
        """Release every shard at once: the other holders claim them at their next beat."""
        self._shards.set_held({})
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            async with self._pool.acquire() as conn:
                released = await shard_leases.leave(conn, self._shards.holder)
            if released:
                metrics.SHARD_MOVES.add({"direction": "released"}, released)
            log.info("shards_left", released=released)
