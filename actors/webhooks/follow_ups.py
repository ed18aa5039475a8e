"""Follow-up webhook jobs: a coin tick stored again with models its job lacks.

A batch's jobs are keyed per URL and coin tick (`payload.tick_key`) and queued with
ON CONFLICT DO NOTHING, so processing a tick again sends nothing twice. A tick can be
processed again with models it was not processed with before, though: the poller
re-reads CURSOR_OVERLAP_ROWS behind the cursor at every start (and a shard's new
holder behind its cursor), so a model activated meanwhile predicts the ticks of that
window, and its predictions are stored. Their webhook items go in a follow-up job of
the tick with its own Idempotency-Key (CONTRACTS.md section 4: one POST per URL per
processed coin). A tick's follow-ups are numbered from its job's key, so the models
every job of the tick carries are read by key (the unique index), and a model's item
of a tick is queued once.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

import asyncpg
import structlog

from actors.webhooks.payload import WebhookItem, tick_jobs, tick_key
from storage.outbox import jobs as outbox

# Follow-up jobs per URL and coin tick at most: one per later processing that brought
# models the tick's jobs lack (each a restart with newly activated models).
FOLLOW_UPS = 8
# Rounds when a concurrent store of the same tick took the follow-up key meanwhile.
ROUNDS = 3

log = structlog.get_logger(__name__)


def follow_up_key(tick_job_key: str, number: int) -> str:
    """Idempotency key of a tick's follow-up job `number` (1, 2, ...)."""
    return hashlib.sha256(f"{tick_job_key}|follow-up {number}".encode()).hexdigest()


async def queue_follow_ups(conn: asyncpg.Connection, items: Sequence[WebhookItem]) -> int:
    """In the storing transaction, once the items' `tick_jobs` are queued and some of them
    existed already: queue the items whose model no job of their tick carries, one
    follow-up job per URL and coin tick; returns how many were queued."""
    queued = 0
    for _ in range(ROUNDS):
        chains: dict[str, list[str]] = {}
        for item in items:
            key = tick_key(item.target_url, item.coin_id, item.timestamp)
            if key not in chains:
                chains[key] = [key, *(follow_up_key(key, n) for n in range(1, FOLLOW_UPS + 1))]
        found = await outbox.models_by_key(conn, [k for chain in chains.values() for k in chain])
        carried = {
            key: {m for k in chain for m in found.get(k, ())} for key, chain in chains.items()
        }
        lacking: dict[str, list[WebhookItem]] = {}
        for item in items:
            key = tick_key(item.target_url, item.coin_id, item.timestamp)
            if item.active_model_id not in carried[key]:
                lacking.setdefault(key, []).append(item)
        follow = []
        for key, part in lacking.items():
            free = next((k for k in chains[key][1:] if k not in found), None)
            if free is None:
                log.warning(
                    "webhook_follow_ups_exhausted",
                    coin_id=part[0].coin_id,
                    data_timestamp=part[0].timestamp,
                    unsent_webhook_models=sorted({i.active_model_id for i in part}),
                )
                continue
            [job] = tick_jobs(part)
            follow.append(dataclasses.replace(job, idempotency_key=free))
        if not follow:
            return queued
        new = await outbox.enqueue(conn, follow)
        queued += new
        if new == len(follow):
            return queued
    return queued
