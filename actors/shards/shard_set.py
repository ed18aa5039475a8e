"""The shards this process holds, shared by the lease actor, the poller and the fences.

The lease actor (`actors.shards.lease`) is the only writer of `held`; the poller
reads it before every poll, and the storing transactions fence their writes
with it: a tick of a shard not held (or held with another generation in the
database) is not committed by this process.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Sequence

import asyncpg

from actors.runtime import metrics
from storage.intake import shard_leases


def new_holder_name(role: str = "serve") -> str:
    """Unique per process start: host, pid and a random suffix (a pid can be reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{role}:{uuid.uuid4().hex[:6]}"


class ShardSet:
    def __init__(self, shard_count: int, holder: str | None = None) -> None:
        self.shard_count = shard_count
        self.holder = holder or new_holder_name()
        self.held: dict[int, int] = {}  # shard -> lease generation
        # Held shards nobody worked on since before this process started (see
        # storage.intake.shard_leases.Claimed): the poller bounds their catch-up by age.
        self.orphaned: set[int] = set()
        self.moves = 0  # leases gained or lost since start (bench.py reports it)
        # Called after every change (the service wakes the poller with it).
        self.on_change: Callable[[], None] | None = None

    def shard_of(self, coin_id: str | None) -> int:
        return shard_leases.shard_of(coin_id, self.shard_count)

    def set_held(self, held: dict[int, int]) -> None:
        before = set(self.held.items())
        after = set(held.items())
        if before == after:
            return
        self.moves += len(after - before) + len(before - after)
        self.held = dict(held)
        self.orphaned &= set(held)
        metrics.SHARDS_HELD.set({}, float(len(held)))
        if self.on_change is not None:
            self.on_change()

    async def fence_coins(self, conn: asyncpg.Connection, coin_ids: Sequence[str]) -> set[str]:
        """Inside a storing transaction: the coins whose shard this process still holds
        (the lease rows stay locked against a takeover until the commit); others are counted."""
        wanted = {c: self.shard_of(c) for c in set(coin_ids)}
        leases = {s: self.held[s] for s in set(wanted.values()) if s in self.held}
        kept_shards = await shard_leases.fence(conn, self.holder, leases)
        kept = {c for c, s in wanted.items() if s in kept_shards}
        fenced = sum(1 for c in coin_ids if c not in kept)
        if fenced:
            metrics.SHARD_FENCED.add({}, fenced)
        return kept
