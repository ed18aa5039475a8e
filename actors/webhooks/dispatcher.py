"""The webhook dispatcher: delivers outbox jobs to n8n, at least once, with retries.

It wakes on a short timer, when a retry falls due, when a delivery finishes and
when it is poked after new jobs were committed (by the batcher for a batch, by a
predictor for manual predictions). Jobs are claimed from the
outbox with a lease, so several dispatchers (or a restarted one) never hold the
same job; a job is settled with the lease as a fence.

Database work is per batch, not per POST: a claim leases the groups of
several POSTs, which wait in a small local queue and start as slots free up
(never more than can start within the lease, so nothing is claimed only to
be handed back), and finished deliveries are settled by a `SettlementWriter`
that writes every result of ~50 ms in one transaction.

Slow receivers stay contained: a host never has more than
`webhook_per_host_limit` deliveries in flight, and a host whose local queue
is full is left out of claims, so its jobs cannot sit locally while their
lease runs out or while other hosts wait behind them.

Several due jobs for the same URL, coin, tick and attempt number are sent as
ONE POST (CONTRACTS.md section 4: one POST per URL per processed coin) with
their predictions merged. The group is keyed on the attempt number too so a
failed combined POST is normally retried with the same members and therefore
the same Idempotency-Key.

What a failure means is decided by `actors.webhooks.retry` (pure rules that know
how n8n answers while it restarts): a URL that keeps answering 404 beyond the
grace is "endpoint missing" and its jobs wait instead of dying (one warning per
URL); they are released when the URL answers 2xx again.

Batched delivery is opt-in (`WEBHOOK_BATCH_MAX_TICKS` > 1, for high-rate users
whose n8n splits the array): up to that many coin ticks of one URL go in one POST
whose body is a JSON array of the per-tick bodies above. A batch is fixed when it
is first claimed (`outbox.fix_batches`), so a retry sends the same ticks with the
same Idempotency-Key; each job is still settled, and marked sent, once.

Every POST says which attempt it is (`X-Pump-Attempt`), when the job was first
tried (`X-Pump-First-Attempt-At`) and when this body was sent (`metadata.sent_at`),
so a workflow can drop alerts that arrive late after an outage.
"""

from __future__ import annotations

import dataclasses
import email.utils
import hashlib
import logging
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import anyio
import asyncpg
import structlog
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from actors.runtime import metrics
from actors.runtime.supervisor import Supervisor
from actors.webhooks.payload import (
    compact_snapshot_json,
    expand_snapshots,
    iso_timestamp,
    payload_json,
    snapshot_keys,
    snapshot_model,
)
from actors.webhooks.retry import AnswerKind, Attempt, RetryRules, Verdict, classify, fixed_reason
from actors.webhooks.retry import decide as decide_verdict
from actors.webhooks.targets import PolicedResolver, TargetPolicy, policy_from, refused_cause
from storage.config import Settings, redact_url
from storage.models import model_settings
from storage.outbox import endpoints as webhook_endpoints
from storage.outbox import jobs as outbox
from storage.outbox.attempts import AttemptRecord
from storage.outbox.jobs import ClaimedJob

ACTOR_NAME = "webhooks"

T = TypeVar("T")

Decision = Verdict

# Transport failures worth another try (the request may not have reached the receiver).
_TRANSIENT_REASONS = frozenset({"timeout", "connection", "client_error"})


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What one POST came back with."""

    status_code: int | None
    reason: str | None  # None when 2xx; else timeout | connection | http_5xx | ...
    error: str | None
    retry_after: float | None  # seconds, from a Retry-After header
    latency_s: float
    kind: AnswerKind | None = None  # None: derived from status_code and reason
    started_at: datetime | None = None  # when the POST began (first_attempt_at)

    @property
    def answer_kind(self) -> AnswerKind:
        if self.kind is not None:
            return self.kind
        if self.reason is None:
            return "ok"
        return classify(self.status_code, sent=self.reason in _TRANSIENT_REASONS)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None if absent/bad."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def group_key_header(keys: Sequence[str]) -> str:
    """Idempotency-Key of a POST: the job's key, or a hash of the sorted keys it merges."""
    if len(keys) == 1:
        return keys[0]
    return hashlib.sha256("|".join(sorted(keys)).encode()).hexdigest()


def merged_body(jobs: Sequence[ClaimedJob], *, sent_at: str | None = None) -> str:
    """The JSON body of one POST for jobs of the same URL, coin and tick.

    Built from the stored item texts by concatenation, predictions ordered by
    model (each job holds one model's items; jobs of the same model keep their
    claim order), so no payload is decoded and encoded again.
    """
    ordered = sorted(jobs, key=lambda job: min(job.active_model_ids, default=0))
    first = jobs[0]
    return payload_json(
        first.coin_id,
        first.timestamp,
        ",".join(job.items_json for job in ordered if job.items_json),
        total_predictions=sum(job.item_count for job in jobs),
        alerts_count=sum(job.alerts_count for job in jobs),
        version=first.version,
        sent_at=sent_at,
    )


def batch_body(jobs: Sequence[ClaimedJob], *, sent_at: str | None = None) -> str:
    """The JSON body of one batched POST: an array of the per-tick bodies (`merged_body`),
    ordered by tick time then coin, so a retried batch has the same body."""
    ticks: dict[tuple[datetime, str], list[ClaimedJob]] = {}
    for job in jobs:
        ticks.setdefault((job.data_timestamp, job.coin_id), []).append(job)
    return "[" + ",".join(merged_body(ticks[key], sent_at=sent_at) for key in sorted(ticks)) + "]"


@dataclass(frozen=True, slots=True)
class DeliveryGroup:
    """The jobs of one POST; `batch_key` set: a batch (array body), else one coin tick."""

    jobs: list[ClaimedJob]
    batch_key: str | None = None

    @property
    def new_batch(self) -> bool:
        """A batch formed by this claim, to be recorded before it is sent."""
        return self.batch_key is not None and self.jobs[0].batch_key is None


def delivery_groups(jobs: Sequence[ClaimedJob], batch_max_ticks: int) -> list[DeliveryGroup]:
    """Claimed jobs as POSTs: jobs of an earlier batch together again; the others per
    URL, coin tick and attempt number, and with `batch_max_ticks` > 1 up to that many
    such ticks of one URL and attempt number in one new batch."""
    fixed: dict[tuple[str, str], list[ClaimedJob]] = {}
    ticks: dict[tuple[str, str, datetime, int], list[ClaimedJob]] = {}
    for job in jobs:
        if job.batch_key is not None:
            fixed.setdefault((job.target_url, job.batch_key), []).append(job)
        else:
            tick = (job.target_url, job.coin_id, job.data_timestamp, job.attempts)
            ticks.setdefault(tick, []).append(job)
    groups = [DeliveryGroup(members, batch_key) for (_, batch_key), members in fixed.items()]
    if batch_max_ticks <= 1:
        return groups + [DeliveryGroup(members) for members in ticks.values()]
    per_url: dict[tuple[str, int], list[list[ClaimedJob]]] = {}
    for (url, _, _, attempts), members in ticks.items():
        per_url.setdefault((url, attempts), []).append(members)
    for tick_groups in per_url.values():
        for members, key in tick_batches(
            tick_groups, batch_max_ticks, lambda job: job.idempotency_key
        ):
            groups.append(DeliveryGroup(members, key))
    return groups


def handoff_batches(
    jobs: Sequence[outbox.OutboxJob], leased: Sequence[bool], batch_max_ticks: int
) -> list[str | None]:
    """With batched delivery, the batch of each job the batcher leases to its dispatcher:
    per URL, up to `batch_max_ticks` of them (one coin tick each) in queueing order, keyed
    as a claim keys the batches it forms. None for the others, and without batching."""
    keys: list[str | None] = [None] * len(jobs)
    if batch_max_ticks <= 1:
        return keys
    per_url: dict[str, list[list[int]]] = {}
    for i, (job, lease) in enumerate(zip(jobs, leased, strict=True)):
        if lease:
            per_url.setdefault(job.target_url, []).append([i])
    for ticks in per_url.values():
        for chunk, key in tick_batches(ticks, batch_max_ticks, lambda i: jobs[i].idempotency_key):
            for i in chunk:
                keys[i] = key
    return keys


def tick_batches(
    ticks: Sequence[list[T]], batch_max_ticks: int, key_of: Callable[[T], str]
) -> Iterator[tuple[list[T], str]]:
    """Consecutive runs of up to `batch_max_ticks` coin ticks (each a list of jobs, or of
    their indexes) as one batch each: its members and its Idempotency-Key. Claims and
    hand-overs both cut batches here, so a batch is keyed the same whichever formed it."""
    for start in range(0, len(ticks), batch_max_ticks):
        members = [member for tick in ticks[start : start + batch_max_ticks] for member in tick]
        yield members, group_key_header([key_of(member) for member in members])


def delivery_headers(jobs: Sequence[ClaimedJob], started_at: datetime) -> dict[str, str]:
    """Headers of one POST: idempotency key, attempt number, first attempt time (ISO UTC).

    Jobs of one POST share their attempt number (the group key holds it); the first
    attempt of the oldest job is reported, this one's start when none was made yet.
    """
    firsts = [job.first_attempt_at for job in jobs if job.first_attempt_at is not None]
    first = min(firsts) if firsts else started_at
    return {
        "Content-Type": "application/json",
        "Idempotency-Key": group_key_header([job.idempotency_key for job in jobs]),
        "X-Pump-Attempt": str(jobs[0].attempts + 1),
        "X-Pump-First-Attempt-At": iso_timestamp(first),
    }


def _host_key(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.lower()}"


@dataclass(slots=True)
class _Group:
    """Claimed jobs of one POST (one URL and coin tick, or a batch), waiting for a slot
    or in flight."""

    jobs: list[ClaimedJob]
    host: str
    expires: float  # time.monotonic() until which the lease surely holds (taken before
    # the statement that leased the jobs, so the lease ends a little later, never sooner)
    batched: bool = False  # the body is an array of coin ticks


@dataclass(frozen=True, slots=True)
class _Finished:
    """A POST that came back, waiting to be written by the SettlementWriter."""

    jobs: list[ClaimedJob]
    result: DeliveryResult
    decision: Decision
    delay: float
    streak_since: datetime | None = None  # first failure of the URL's streak; None: 2xx


_JOB_STATUS: dict[Decision, outbox.JobStatus] = {
    "delivered": "delivered",
    "retry": "pending",
    "wait": "waiting",
    "failed": "dead",
    "dead": "dead",
}


def successes_to_record(
    streaks: Mapping[str, datetime | None],
    confirmed: Mapping[str, float],
    now: float,
    reconfirm_seconds: float,
) -> list[str]:
    """The URLs of a flush whose 2xx is written (deleting any failing streak).

    `streaks`: each URL's streak after its latest answer in the flush (None: a 2xx);
    `confirmed`: monotonic time at which this writer last deleted a URL's streak, for
    URLs that did not fail since. A success is written unless that was less than
    `reconfirm_seconds` ago.
    """
    return [
        url
        for url, streak in streaks.items()
        if streak is None and now - confirmed.get(url, -math.inf) >= reconfirm_seconds
    ]


class SettlementWriter:
    """Writes finished deliveries in batches: one transaction per flush.

    Every POST used to settle in its own transaction (an UPDATE and one INSERT
    per job); under load that was most of the dispatcher's database work. A
    flush holds every result that arrived within `max_delay` seconds (or
    `max_jobs` jobs): one UPDATE for all their outcomes and one multi-row INSERT
    of their attempts. The leases are fences as before, so a late flush can
    never overwrite a job another dispatcher took over; it only costs lease time.

    A URL that answered 2xx deletes its failing streak (`webhook_endpoints`), if
    any. A streak is normally this dispatcher's own, known here; another
    dispatcher's (workers, replicas) is not, so a success still deletes by URL, but
    at most once per `reconfirm_seconds` while this writer saw no failure of the URL
    in between: the DELETE was one of the flush's few statements on every flush.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        on_settled: Callable[[_Finished, set[int]], None],
        on_endpoints: Callable[[list[str], int, list[str]], None],
        *,
        max_delay: float,
        max_jobs: int,
        reconfirm_seconds: float = 1.0,
    ) -> None:
        self.pool = pool
        self.on_settled = on_settled
        self.on_endpoints = on_endpoints
        self.max_delay = max_delay
        self.max_jobs = max_jobs
        self.reconfirm_seconds = reconfirm_seconds
        # URL -> when a flush of ours last deleted its streak, no failure of it seen since.
        self._confirmed: dict[str, float] = {}
        self._buffer: list[_Finished] = []
        self._jobs = 0
        self._wake = anyio.Event()
        self._closed = False
        self.flushes = 0

    def add(self, finished: _Finished) -> None:
        self._buffer.append(finished)
        self._jobs += len(finished.jobs)
        if len(self._buffer) == 1 or self._jobs >= self.max_jobs:
            self._wake.set()

    def close(self) -> None:
        """Write what is buffered, then end `run`."""
        self._closed = True
        self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            if not self._closed and self._jobs < self.max_jobs:
                # Let the POSTs finishing about now join this transaction.
                with anyio.move_on_after(self.max_delay):
                    while self._jobs < self.max_jobs and not self._closed:
                        await self._wake.wait()
                        self._wake = anyio.Event()
            await self.flush()
            if self._closed and not self._buffer:
                return

    async def flush(self) -> None:
        batch, self._buffer, self._jobs = self._buffer, [], 0
        if not batch:
            return
        settlements: list[outbox.Settlement] = []
        attempts: list[AttemptRecord] = []
        # The latest answer of each URL in this flush decides its endpoint state.
        latest: dict[str, _Finished] = {}
        for item in batch:
            if item.result.reason != "missing_snapshot":
                latest[item.jobs[0].target_url] = item
            status = _JOB_STATUS[item.decision]
            error = None if item.decision == "delivered" else (item.result.error or "")
            latency_ms = round(item.result.latency_s * 1000, 3)
            for job in item.jobs:
                settlements.append(
                    outbox.Settlement(
                        job.lease,
                        status,
                        item.delay,
                        error,
                        item.result.status_code,
                        item.result.started_at,
                    )
                )
                attempts.append(
                    AttemptRecord(
                        outbox_id=job.id,
                        attempt=job.attempts + 1,
                        target_url=job.target_url,
                        active_model_ids=job.active_model_ids,
                        model_ids=job.model_ids,
                        status_code=item.result.status_code,
                        latency_ms=latency_ms,
                        error=item.result.error,
                        outcome=item.decision,
                    )
                )
        failures = [
            webhook_endpoints.Failure(
                url, item.streak_since, item.result.status_code, item.decision == "wait"
            )
            for url, item in latest.items()
            if item.streak_since is not None
        ]
        now = time.monotonic()
        for url, item in latest.items():
            if item.streak_since is not None:
                self._confirmed.pop(url, None)
        recovered_urls = successes_to_record(
            {url: item.streak_since for url, item in latest.items()},
            self._confirmed,
            now,
            self.reconfirm_seconds,
        )
        async with self.pool.acquire() as conn:
            # Usually the settlements and attempts alone: one statement, its own transaction.
            together: AbstractAsyncContextManager[object] = (
                conn.transaction() if recovered_urls or failures else nullcontext()
            )
            async with together:
                settled = set(await outbox.settle(conn, settlements, attempts))
                recovered = await webhook_endpoints.record_successes(conn, recovered_urls)
                released = await outbox.release_waiting(conn, recovered)
                missing = await webhook_endpoints.record_failures(conn, failures)
        self.flushes += 1
        if len(self._confirmed) > 10_000:
            self._confirmed.clear()
        self._confirmed.update((url, now) for url in recovered_urls)
        for item in batch:
            self.on_settled(item, settled)
        if recovered or missing:
            self.on_endpoints(recovered, released, missing)


class WebhookDispatcher:
    """Claims due outbox jobs and POSTs them; `poke()` after committing new jobs.

    Claimed groups wait in a small local queue and start as slots free up, so a
    claim is made for many POSTs and nothing is claimed that cannot start soon:
    per host at most `per_host_limit` groups ahead of the ones in flight (three
    times that for a host that answers quickly), which bounds the wait well
    inside the lease. A group whose lease ran low while it waited is handed back
    unsent (`released_jobs` counts them; none in a healthy steady state).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        timeout: float,
        concurrency: int,
        per_host_limit: int,
        max_age_seconds: float,
        max_attempts: int,
        poll_interval: float = 1.0,
        backoff_base: float = 1.0,
        backoff_max: float = 300.0,
        coalesce_window: float = 0.02,
        lease_seconds: float | None = None,
        settle_delay: float = 0.25,
        settle_max_jobs: int = 500,
        not_found_grace: float = 300.0,
        targets: TargetPolicy | None = None,
        payload: str = "full",
        configured_url: str | None = None,
        batch_max_ticks: int = 1,
        unsent: UnsentJobs | None = None,
    ) -> None:
        self.pool = pool
        # Shared by this process's successive instances: what a crashed one held unsent.
        self._unsent = unsent
        self.timeout = timeout
        self.concurrency = concurrency
        self.per_host_limit = per_host_limit
        self.max_age_seconds = max_age_seconds
        self.max_attempts = max_attempts
        self.poll_interval = poll_interval
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.coalesce_window = coalesce_window
        self.rules = RetryRules(max_attempts, max_age_seconds, not_found_grace)
        # Where POSTs may go (actors.webhooks.targets); the default refuses every
        # non-global address, loopback included.
        self.targets = targets if targets is not None else TargetPolicy()
        # First failure of each URL's failing streak (None: its last answer was 2xx),
        # read from webhook_endpoints the first time a URL is claimed.
        self._streaks: dict[str, datetime | None] = {}
        # The lease must outlive the wait in the local queue (bounded by one POST per
        # slot ahead), the POST (bounded by the timeout) and the settlement flush, or a
        # second dispatcher could claim a job that is still being sent.
        self.lease_seconds = lease_seconds if lease_seconds is not None else 2 * timeout + 10
        self._wake = anyio.Event()
        self._poked = False
        self._stopping = False
        self._in_flight = 0
        self._per_host: Counter[str] = Counter()
        self._queue: deque[_Group] = deque()
        self._queued: Counter[str] = Counter()  # groups waiting locally, per host
        # Every URL seen per host, so that all URLs of a host can be left out of a claim.
        self._host_urls: dict[str, set[str]] = {}
        self._latency: dict[str, float] = {}  # recent POST latency per host (EWMA, s)
        self._snapshots: dict[str, str] = {}  # model JSON by snapshot key (immutable)
        # N8N_PAYLOAD: the form of the model objects sent, "full" or "compact"; a model's
        # own choice (active_models.n8n_payload, re-read every few seconds) wins. Applied
        # when sending, so a change reaches the jobs already queued too.
        self.payload = payload
        self.configured_url = configured_url  # N8N_WEBHOOK_URL, checked once at start
        # WEBHOOK_BATCH_MAX_TICKS: coin ticks per POST (1: one POST per tick, the default).
        self.batch_max_ticks = batch_max_ticks
        self._payload_overrides: dict[int, str] = {}
        self._overrides_read = -float("inf")
        self._snapshot_models: dict[str, int | None] = {}  # snapshot key -> active model
        self._compact: dict[str, str] = {}  # compact model JSON by snapshot key
        # When to look at the outbox for any host (0: now); hosts left out of the last
        # claim, or cut short by its limit, are looked at again once they have room.
        self._look_at = 0.0
        self._waiting_hosts: set[str] = set()
        # Jobs the batcher leased to this dispatcher when it queued them (`take`), with
        # the moment until which their lease surely holds, until the loop queues them.
        self._handed: list[tuple[list[ClaimedJob], float]] = []
        self._handed_per_host: Counter[str] = Counter()
        # Hosts with jobs queued without a lease (no room when they were stored): until
        # a claim finds none of them left, newer jobs of the host are not handed over
        # either, so they cannot overtake the older ones (which would age out).
        self._spilled: set[str] = set()
        self._depth_updated = 0.0
        self._starts: MemoryObjectSendStream[_Group]  # to the delivery slots, while running
        # `settle_delay`: 0.25 s lets the POSTs of about two batches share a flush (its
        # UPDATE, attempts INSERT and commit); at 0.05 s each batch's POSTs had their
        # own, and PostgreSQL's CPU per tick was ~10 % higher (docs/benchmarks.md,
        # session 15). The price: a 2xx shows as delivered up to that much later, and a
        # process killed meanwhile re-sends those POSTs under the same Idempotency-Key.
        self._writer = SettlementWriter(
            pool,
            self._settled,
            self._endpoints_changed,
            max_delay=settle_delay,
            max_jobs=settle_max_jobs,
        )
        self.delivered_jobs = 0  # by this instance (operators and tests look at it)
        self.claims = 0  # claim queries made
        self.released_jobs = 0  # claimed, then handed back unsent
        self._log = structlog.get_logger(__name__).bind(actor=ACTOR_NAME)

    @classmethod
    def from_settings(
        cls, settings: Settings, pool: asyncpg.Pool, *, demo: bool = False, **overrides: Any
    ) -> WebhookDispatcher:
        """`demo`: the demo's stand-in n8n listens on 127.0.0.1, so loopback is allowed."""
        options: dict[str, Any] = {
            "targets": policy_from(
                settings.webhook_allowed_networks,
                api_host=settings.api_host,
                api_port=settings.api_port,
                demo=demo,
            ),
            "timeout": settings.n8n_webhook_timeout,
            "concurrency": settings.webhook_concurrency,
            "per_host_limit": settings.webhook_per_host_limit,
            "max_age_seconds": settings.webhook_max_age_seconds,
            "max_attempts": settings.webhook_max_attempts,
            "not_found_grace": settings.webhook_not_found_grace_seconds,
            "payload": settings.n8n_payload,
            "configured_url": settings.n8n_webhook_url or None,
            "batch_max_ticks": settings.webhook_batch_max_ticks,
        }
        options.update(overrides)
        return cls(pool, **options)

    # ---- control (call from the event loop; never blocks) ----------------------------

    def poke(self, *, whole_ticks: bool = False) -> None:
        """New jobs were committed: look now.

        `whole_ticks`: each job holds every model's prediction of its tick (the
        batcher's), so they are claimed at once. Otherwise (a manual prediction
        commits model by model) a short coalescing window lets the tick's other
        jobs join the same POST.
        """
        if not whole_ticks:
            self._poked = True
        self._look_at = 0.0
        self._wake.set()

    def handoff_room(self, urls: Iterable[str]) -> dict[str, int]:
        """How many new jobs of each URL this dispatcher can take now (`take`), within the
        bounds a claim keeps (its local queue, each host's depth): the batcher leases that
        many to it in the transaction that queues them, the rest wait for a claim. None
        while stopping. With batched delivery a POST takes up to `batch_max_ticks` jobs
        (`handoff_batches`), so the room for POSTs is that many times as many jobs."""
        if self._stopping:
            return {}
        if self._unsent is not None and self._unsent.holds(self):
            return {}  # crashed: the jobs wait for the next instance's claim
        handed = sum(self._handed_per_host.values())
        total = 3 * self.concurrency - len(self._queue) - handed
        room: dict[str, int] = {}
        for url in urls:
            host = _host_key(url)
            ahead = self._queued[host] + self._handed_per_host[host]
            spilled = host in self._spilled
            posts = 0 if spilled else max(0, min(total, self._depth(host) - ahead))
            room[url] = posts * max(1, self.batch_max_ticks)
        return room

    def spilled(self, urls: Iterable[str]) -> None:
        """Jobs of these URLs were queued without a lease: they wait for a claim."""
        self._spilled.update(_host_key(url) for url in urls)

    def take(self, jobs: list[ClaimedJob], snapshots: Mapping[str, str], expires: float) -> None:
        """Jobs leased to this dispatcher by the transaction that queued them (committed),
        with the texts of the model snapshots they refer to; `expires` is the
        `time.monotonic()` until which their lease surely holds."""
        if not jobs:
            return
        if self._unsent is not None and self._unsent.holds(self):
            # This instance crashed after the batcher asked it for room: the next one
            # sends them.
            self._unsent.handed.append((jobs, expires))
            self._unsent.snapshots.update(snapshots)
            return
        self._snapshots.update(snapshots)
        self._handed.append((jobs, expires))
        # Counted in POSTs, as the queue is: a batch is one.
        for host, _ in {(_host_key(job.target_url), job.batch_key or job.id) for job in jobs}:
            self._handed_per_host[host] += 1
        self._wake.set()

    def request_stop(self) -> None:
        """Stop claiming; deliveries in flight finish and are recorded, queued ones go back."""
        self._stopping = True
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def settle_flushes(self) -> int:
        """Transactions written by the settlement writer so far."""
        return self._writer.flushes

    # ---- the loop --------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self._adopt_unsent()
        try:
            await self._run(task_status)
        except BaseException:
            self._leave_unsent()
            raise

    def _adopt_unsent(self) -> None:
        """Queue what the crashed instance before this one held unsent: leased to this
        process, so sent now rather than claimed after the lease (~30 s)."""
        if self._unsent is None:
            return
        groups, handed, snapshots = self._unsent.take_all()
        for jobs, expires in handed:
            self.take(jobs, snapshots, expires)
        for group in groups:
            self._host_urls.setdefault(group.host, set()).add(group.jobs[0].target_url)
            self._queue.append(group)
            self._queued[group.host] += 1

    def _leave_unsent(self) -> None:
        """Crashed (or cancelled): the leased jobs not started yet go to the next instance."""
        if self._unsent is not None:
            self._unsent.leave(self, list(self._queue), self._handed, self._snapshots)
        self._queue.clear()
        self._handed = []

    async def _run(self, task_status: TaskStatus[None]) -> None:
        # Every name is resolved through the policy: the addresses checked are the ones
        # connected to, so DNS rebinding cannot slip a refused address in.
        connector = aiohttp.TCPConnector(
            limit=self.concurrency,
            limit_per_host=self.per_host_limit,
            resolver=PolicedResolver(self.targets),
        )
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
            anyio.create_task_group() as writer_tg,
        ):
            await writer_tg.start(self._writer.run)
            # One long-lived task per delivery slot, fed through a stream: a task spawned
            # per POST cost ~30 us of anyio's task set-up, a sixth of a POST's CPU.
            starts, groups = anyio.create_memory_object_stream[_Group](self.concurrency)
            try:
                async with anyio.create_task_group() as tg, starts:
                    for _ in range(self.concurrency):
                        tg.start_soon(self._deliveries, session, groups.clone())
                    groups.close()
                    self._starts = starts
                    self._log.info(
                        "webhook_dispatcher_started",
                        concurrency=self.concurrency,
                        per_host_limit=self.per_host_limit,
                    )
                    task_status.started()
                    if self.configured_url:
                        tg.start_soon(self._check_configured_url, self.configured_url)
                    await self._retarget_waiting()
                    wait: float | None = 0.0
                    while not self._stopping:
                        await self._sleep(wait)
                        if self._stopping:
                            break
                        wait = await self._step()
                    await self._queue_handed()
                    await self._release([g for g in self._queue], reason="stopping")
                    self._queue.clear()
                    self._queued.clear()
                    # Closing `starts` (leaving its block) lets the slots finish the
                    # deliveries in flight; leaving the task group waits for them.
            finally:
                # Their results are written before run() returns.
                self._writer.close()
        self._log.info("webhook_dispatcher_stopped")

    async def _retarget_waiting(self) -> None:
        """Jobs waiting on a missing endpoint follow their models to a URL configured
        since (N8N_WEBHOOK_URL changed across a restart)."""
        async with self.pool.acquire() as conn:
            moved = await outbox.retarget_waiting(conn, self.configured_url)
        if moved:
            self._log.warning("webhook_waiting_jobs_moved", jobs=moved, reason="url_changed")

    async def _check_configured_url(self, url: str) -> None:
        """Config time: a refused N8N_WEBHOOK_URL is said at start, not only when the
        first alert dies (delivery refuses it anyway)."""
        refusal = await self.targets.check_url(url)
        if refusal is not None:
            self._log.error(
                "webhook_target_refused",
                url=redact_url(url),
                setting="N8N_WEBHOOK_URL",
                reason=refusal,
            )

    async def _sleep(self, seconds: float | None) -> None:
        timeout = self.poll_interval if seconds is None else min(seconds, self.poll_interval)
        if timeout > 0 and not self._wake.is_set():
            with anyio.move_on_after(timeout):
                await self._wake.wait()
        self._wake = anyio.Event()
        if self._poked:
            # A manual prediction queues one job per model: a short pause lets the
            # tick's other models' jobs be committed and share the POST.
            self._poked = False
            await anyio.sleep(self.coalesce_window)

    def _depth(self, host: str) -> int:
        """Groups a host may have waiting locally: one round of its slots, three when it
        answers fast enough for three rounds to fit easily in the lease."""
        latency = self._latency.get(host)
        spare = self.lease_seconds - self.timeout
        if latency is not None and 3 * latency * 4 <= spare:
            return 3 * self.per_host_limit
        return self.per_host_limit

    def _has_room(self, host: str) -> bool:
        """Worth claiming for: at most half of its local queue is filled."""
        return self._queued[host] <= self._depth(host) // 2

    async def _step(self) -> float | None:
        """Start what fits, claim when the local queue runs low; returns how long to wait."""
        await self._queue_handed()
        await self._start_queued()
        now = time.monotonic()
        look = now >= self._look_at or any(self._has_room(h) for h in self._waiting_hosts)
        if look:
            if len(self._queue) >= 3 * self.concurrency:
                return None  # the local queue is full: a finished POST wakes us
            await self._claim(now)
            await self._start_queued()
        return max(0.0, self._look_at - time.monotonic())

    async def _claim(self, now: float) -> None:
        excluded_hosts = {h for h in self._host_urls if not self._has_room(h)}
        rooms = [
            self._depth(h) - self._queued[h] for h in self._host_urls if h not in excluded_hosts
        ]
        # A host not seen yet may get the whole claim: at most one round of its slots.
        limit = min(
            3 * self.concurrency - len(self._queue), min(rooms, default=self.per_host_limit)
        )
        # The limit counts due jobs, about one coin tick each; a batch POST takes several.
        limit *= max(1, self.batch_max_ticks)
        excluded = sorted(url for h in excluded_hosts for url in self._host_urls[h])
        started = time.monotonic()
        async with self.pool.acquire() as conn:
            claimed = await outbox.claim_due(
                conn, limit=limit, lease_seconds=self.lease_seconds, exclude_urls=excluded
            )
            self.claims += 1
            jobs = await self._with_models(conn, claimed.jobs)
            groups = delivery_groups(jobs, self.batch_max_ticks)
            new = [
                (j.lease, g.batch_key)
                for g in groups
                if g.batch_key and g.new_batch
                for j in g.jobs
            ]
            if new:
                await outbox.fix_batches(conn, new)
            await self._load_streaks(conn, {job.target_url for job in jobs})
            await self._update_depth(conn)
            idle = not jobs and not self._queue and self._in_flight == 0
            next_due = (
                await outbox.seconds_until_next_due(conn, exclude_urls=excluded) if idle else None
            )
        expires = started + self.lease_seconds
        claimed_hosts: set[str] = set()
        for group in groups:
            url = group.jobs[0].target_url
            host = _host_key(url)
            self._host_urls.setdefault(host, set()).add(url)
            self._queue.append(_Group(group.jobs, host, expires, group.batch_key is not None))
            self._queued[host] += 1
            claimed_hosts.add(host)
        if limit > 0 and not claimed.full:  # nothing left behind but left-out hosts' jobs
            self._spilled &= excluded_hosts
        # Left-out hosts may have more due; so may the claimed ones if the limit cut the
        # claim short. Anything else is found by a poke, a retry falling due or the timer.
        self._waiting_hosts = excluded_hosts | (claimed_hosts if claimed.full else set())
        if next_due is None:
            wait = self.poll_interval
        else:
            # A job due now that the claim just missed was committed a moment ago; the
            # rest of its tick may be being committed: wait as after a manual poke.
            wait = min(max(next_due, self.coalesce_window), self.poll_interval)
        self._look_at = now + wait

    async def _queue_handed(self) -> None:
        """The jobs handed over since the last step, as POSTs in the local queue. The
        database is read only for what this dispatcher does not know yet (a URL's failing
        streak, a snapshot, the models' payload forms every few seconds)."""
        handed, self._handed = self._handed, []
        self._handed_per_host.clear()
        if not handed:
            return
        jobs = [job for part, _ in handed for job in part]
        wanted = {key for job in jobs for key in snapshot_keys(job.items_json)}
        urls = {job.target_url for job in jobs}
        if (
            wanted - self._snapshots.keys()
            or urls - self._streaks.keys()
            or time.monotonic() - self._overrides_read >= 5.0
        ):
            try:
                async with self.pool.acquire() as conn:
                    await self._load_streaks(conn, urls)
                    await self._read_models(conn, wanted)
            except BaseException:
                self._handed[:0] = handed  # still ours: left to the next instance
                raise
        for part, expires in handed:
            # Jobs handed with a batch key go out together, as a claim's batch would.
            for group in delivery_groups(self._expanded(part, wanted), 1):
                host = _host_key(group.jobs[0].target_url)
                self._host_urls.setdefault(host, set()).add(group.jobs[0].target_url)
                self._queue.append(_Group(group.jobs, host, expires, group.batch_key is not None))
                self._queued[host] += 1

    async def _load_streaks(self, conn: asyncpg.Connection, urls: set[str]) -> None:
        """Failing streaks of URLs this dispatcher has not seen (another instance, or
        before a restart, may have started them)."""
        unknown = sorted(urls - self._streaks.keys())
        if not unknown:
            return
        if len(self._streaks) + len(unknown) > 10_000:
            self._streaks = {u: s for u, s in self._streaks.items() if s is not None}
        states = await webhook_endpoints.load(conn, unknown)
        for url in unknown:
            state = states.get(url)
            self._streaks[url] = None if state is None else state.failing_since

    async def _with_models(
        self, conn: asyncpg.Connection, jobs: list[ClaimedJob]
    ) -> list[ClaimedJob]:
        """The jobs with their model snapshot references replaced by the models' JSON.

        A job whose snapshot is missing (never written with it, or deleted by hand)
        cannot be sent as the contract requires: it is given up as dead, logged.
        """
        wanted = {key for job in jobs for key in snapshot_keys(job.items_json)}
        if jobs:
            await self._read_models(conn, wanted)
        return self._expanded(jobs, wanted)

    async def _read_models(self, conn: asyncpg.Connection, wanted: set[str]) -> None:
        """Snapshots this dispatcher lacks, and the models' payload forms when older than 5 s."""
        missing = wanted - self._snapshots.keys()
        if missing:
            if len(self._snapshots) + len(missing) > 1024:
                self._snapshots.clear()
                self._snapshot_models.clear()
                self._compact.clear()
                missing = wanted
            self._snapshots.update(await outbox.load_snapshots(conn, sorted(missing)))
        if time.monotonic() - self._overrides_read >= 5.0:
            self._payload_overrides = await model_settings.payload_overrides(conn)
            self._overrides_read = time.monotonic()

    def _expanded(self, jobs: list[ClaimedJob], wanted: set[str]) -> list[ClaimedJob]:
        """`_with_models` once the snapshots and payload forms are read."""
        texts = {key: self._model_text(key) for key in wanted if key in self._snapshots}
        ready = []
        for job in jobs:
            try:
                ready.append(
                    dataclasses.replace(job, items_json=expand_snapshots(job.items_json, texts))
                )
            except KeyError as exc:
                error = f"model snapshot {exc.args[0]} is missing from webhook_model_snapshots"
                result = DeliveryResult(None, "missing_snapshot", error, None, 0.0)
                self._writer.add(_Finished([job], result, "dead", 0.0))
        return ready

    def _model_text(self, key: str) -> str:
        """A snapshot's text (a model object, or an item tail with its model) in the form
        its model is sent with."""
        full = self._snapshots[key]
        if key not in self._snapshot_models:
            model = snapshot_model(key, full)
            model_id = model.get("active_model_id") if isinstance(model, dict) else None
            self._snapshot_models[key] = model_id if isinstance(model_id, int) else None
        model_id = self._snapshot_models[key]
        form = self._payload_overrides.get(model_id, self.payload) if model_id else self.payload
        if form != "compact":
            return full
        compact = self._compact.get(key)
        if compact is None:
            compact = self._compact[key] = compact_snapshot_json(key, full)
        return compact

    async def _start_queued(self) -> None:
        if not self._queue:
            return
        waiting: deque[_Group] = deque()
        stale: list[_Group] = []
        now = time.monotonic()
        # Enough lease left for the POST and its settlement.
        needed = min(self.timeout + 2.0, 0.5 * self.lease_seconds)
        while self._queue:
            group = self._queue.popleft()
            if self._in_flight >= self.concurrency or self._per_host[group.host] >= (
                self.per_host_limit
            ):
                waiting.append(group)
                continue
            self._queued[group.host] -= 1
            if group.expires - now < needed:
                stale.append(group)
                continue
            self._in_flight += 1
            self._per_host[group.host] += 1
            # Never blocks: a group is sent only while fewer than `concurrency` are
            # in flight, and the stream holds that many.
            self._starts.send_nowait(group)
        self._queue = waiting
        if stale:
            await self._release(stale, reason="lease_ran_low")

    async def _release(self, groups: list[_Group], *, reason: str) -> None:
        leases = [job.lease for group in groups for job in group.jobs]
        if not leases:
            return
        async with self.pool.acquire() as conn:
            await outbox.release(conn, leases)
        self.released_jobs += len(leases)
        self._log.info("webhook_jobs_released", jobs=len(leases), reason=reason)

    async def _update_depth(self, conn: asyncpg.Connection) -> None:
        now = time.monotonic()
        # A count over the outbox costs the database real work under load: every 5 s.
        if now - self._depth_updated >= 5.0:
            self._depth_updated = now
            metrics.WEBHOOK_OUTBOX_DEPTH.set({}, await outbox.outbox_depth(conn))

    # ---- one delivery ------------------------------------------------------------------

    async def _deliveries(
        self, session: aiohttp.ClientSession, groups: MemoryObjectReceiveStream[_Group]
    ) -> None:
        """One delivery slot: POSTs the groups it is given, one at a time."""
        async with groups:
            async for group in groups:
                await self._deliver_group(session, group)

    async def _deliver_group(self, session: aiohttp.ClientSession, group: _Group) -> None:
        jobs = group.jobs
        try:
            result = await self._post(session, jobs, batched=group.batched)
            previous = self._latency.get(group.host)
            self._latency[group.host] = (
                result.latency_s if previous is None else 0.8 * previous + 0.2 * result.latency_s
            )
            oldest = min(job.created_at for job in jobs)
            url = jobs[0].target_url
            now = datetime.now(UTC)
            streak: datetime | None = None
            if result.answer_kind != "ok":
                streak = self._streaks.get(url) or result.started_at or now
            self._streaks[url] = streak
            decision, delay = self.decide(
                result,
                attempt=jobs[0].attempts + 1,
                created_at=oldest,
                streak_age_s=0.0 if streak is None else (now - streak).total_seconds(),
            )
            self._writer.add(_Finished(jobs, result, decision, delay, streak))
        finally:
            self._in_flight -= 1
            self._per_host[group.host] -= 1
            self._wake.set()

    async def _post(
        self, session: aiohttp.ClientSession, jobs: list[ClaimedJob], *, batched: bool = False
    ) -> DeliveryResult:
        started_at = datetime.now(UTC)
        build = batch_body if batched else merged_body
        body = build(jobs, sent_at=iso_timestamp(started_at)).encode()
        headers = delivery_headers(jobs, started_at)
        started = time.monotonic()
        status: int | None = None
        retry_after: float | None = None
        reason: str | None = None
        error: str | None = None
        kind: AnswerKind = "ok"
        refused = self.targets.literal_refusal(jobs[0].target_url)
        if refused is not None:
            # An IP literal or metadata name: aiohttp would not ask the resolver.
            return DeliveryResult(
                None, "target_refused", refused, None, 0.0, "unsendable", started_at
            )
        try:
            # Redirects are not followed: aiohttp would turn the POST into a GET.
            async with session.post(
                jobs[0].target_url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                # Only the start of the body is read, to recognise n8n's answers; it is
                # never stored or shown (the target may be a host that must not be read
                # back). A receiver that streams megabytes must not slow the dispatcher.
                head = await response.content.read(1024)
            if not 200 <= status < 300:
                reason = "http_429" if status == 429 else f"http_{status // 100}xx"
                kind = classify(status, head.decode(errors="replace"))
                error = fixed_reason(status, kind)
        except TimeoutError:
            reason, error, kind = "timeout", f"no answer within {self.timeout}s", "no_answer"
        except aiohttp.InvalidURL:
            reason, error, kind = "invalid_url", "invalid URL", "unsendable"
        except aiohttp.ClientConnectionError as exc:
            cause = refused_cause(exc)
            if cause is not None:
                reason, error, kind = "target_refused", str(cause), "unsendable"
            else:
                reason = "connection"
                error = f"connection failed ({type(exc).__name__})"
                kind = "no_answer"
        except aiohttp.ClientError as exc:
            reason, error, kind = (
                "client_error",
                f"HTTP client error ({type(exc).__name__})",
                ("no_answer"),
            )
        except Exception as exc:
            # A job that breaks the HTTP client would crash the actor, come back after
            # its lease and crash it again: it is logged and given up instead.
            self._log.exception(
                "webhook_unexpected_error",
                job_ids=[job.id for job in jobs],
                url=redact_url(jobs[0].target_url),
            )
            reason, error, kind = "unexpected", f"{type(exc).__name__}: {exc}", "unsendable"
        latency = time.monotonic() - started
        metrics.WEBHOOK_LATENCY.observe({}, latency)
        return DeliveryResult(status, reason, error, retry_after, latency, kind, started_at)

    def backoff(self, attempt: int) -> float:
        """Seconds before retry number `attempt` (1-based): exponential, with jitter."""
        ceiling = min(self.backoff_max, self.backoff_base * 2.0 ** (attempt - 1))
        return ceiling * random.uniform(0.5, 1.0)

    def decide(
        self,
        result: DeliveryResult,
        *,
        attempt: int,
        created_at: datetime,
        streak_age_s: float = 0.0,
    ) -> tuple[Decision, float]:
        """(outcome of this attempt, seconds until the next one): `webhook_retry.decide`
        with this dispatcher's limits and back-off."""
        answer = Attempt(
            status_code=result.status_code,
            kind=result.answer_kind,
            attempt=attempt,
            job_age_s=(datetime.now(UTC) - created_at).total_seconds(),
            streak_age_s=streak_age_s,
            retry_after_s=result.retry_after,
        )
        return decide_verdict(answer, self.rules, self.backoff(attempt))

    def _settled(self, item: _Finished, settled: set[int]) -> None:
        """After a flush committed: metrics, logs, and when to look for the retry."""
        jobs, result, decision, delay = item.jobs, item.result, item.decision, item.delay
        self._count(decision, result, len(jobs))
        if decision == "delivered":
            self.delivered_jobs += sum(1 for job in jobs if job.id in settled)
        elif decision == "retry":
            # The jobs are due `delay` seconds after the flush's transaction began.
            self._look_at = min(self._look_at, time.monotonic() + delay)
            self._wake.set()
        lost = sorted(job.id for job in jobs if job.id not in settled)
        if decision == "delivered" and not lost and not self._log.is_enabled_for(logging.DEBUG):
            # The common case writes no line: its context (sets, sorts, a redacted URL
            # per POST) is not built either.
            return
        context = _settled_context(jobs, result)
        if lost:
            # Our lease ran out mid-delivery and another dispatcher took the job over.
            self._log.warning("webhook_lease_lost", lost_job_ids=lost, **context)
        if decision == "delivered":
            self._log.debug("webhook_delivered", **context)
        elif decision == "wait":
            # One warning per URL (when it becomes missing, `_endpoints_changed`).
            self._log.info("webhook_waiting_for_endpoint", reason=result.reason, **context)
        elif decision == "retry":
            self._log.info(
                "webhook_retry_scheduled",
                reason=result.reason,
                error=result.error,
                retry_in_s=round(delay, 3),
                **context,
            )
        else:
            self._log.error(
                "webhook_dead",
                reason=result.reason,
                error=result.error,
                outcome=decision,
                **context,
            )

    def _endpoints_changed(self, recovered: list[str], released: int, missing: list[str]) -> None:
        """After a flush: warn once per URL that became missing; note recoveries."""
        for url in missing:
            self._log.warning(
                "webhook_endpoint_missing",
                url=redact_url(url),
                grace_s=self.rules.not_found_grace_s,
                note="jobs of this URL wait (not dead) until it answers again, the model's"
                " URL changes or an operator retries them (POST /api/webhooks/retry-all)",
            )
        if recovered:
            self._log.warning(
                "webhook_endpoint_recovered",
                urls=[redact_url(url) for url in recovered],
                released_jobs=released,
            )
            if released:
                self._look_at = 0.0
                self._wake.set()

    @staticmethod
    def _count(decision: Decision, result: DeliveryResult, jobs: int) -> None:
        if decision == "delivered":
            metrics.WEBHOOK_SENT.add({}, jobs)
            return
        metrics.WEBHOOK_FAILED.add({"reason": result.reason or "unknown"}, jobs)
        if decision == "retry":
            metrics.WEBHOOK_RETRIED.add({}, jobs)
        elif decision == "wait":
            metrics.WEBHOOK_WAITING.add({}, jobs)
        else:
            metrics.WEBHOOK_DEAD.add({}, jobs)


def _settled_context(jobs: Sequence[ClaimedJob], result: DeliveryResult) -> dict[str, Any]:
    """What a settled POST's log line says about it."""
    return {
        "url": redact_url(jobs[0].target_url),
        "job_ids": [job.id for job in jobs],
        "coin_id": jobs[0].coin_id,
        "ticks": len({(job.coin_id, job.data_timestamp) for job in jobs}),
        "active_model_ids": sorted({m for job in jobs for m in job.active_model_ids}),
        "model_ids": sorted({m for job in jobs for m in job.model_ids}),
        "attempt": jobs[0].attempts + 1,
        "status_code": result.status_code,
        "latency_ms": round(result.latency_s * 1000, 1),
    }


def poker(
    supervisor: Supervisor, name: str = ACTOR_NAME, *, whole_ticks: bool = False
) -> Callable[[], None]:
    """A function that pokes whichever dispatcher instance is running now (if any).

    The batcher and predictors hold this rather than the dispatcher, which the
    supervisor replaces when it restarts; a missed poke costs up to one poll interval.
    `whole_ticks`: see `WebhookDispatcher.poke`.
    """

    def poke() -> None:
        if name in supervisor.actor_names:
            actor = supervisor.actor(name)
            if isinstance(actor, WebhookDispatcher):
                actor.poke(whole_ticks=whole_ticks)

    return poke


class UnsentJobs:
    """Jobs leased to this process that a dispatcher instance held unsent when it crashed
    (a database outage), for the instance the supervisor starts next. Their lease is
    this process's, so that one sends them at once; without it they would wait for the
    lease to end (~30 s) and another claim. POSTs started before the crash are not
    among them: those are sent again after their lease, as before."""

    def __init__(self) -> None:
        self.groups: list[_Group] = []
        self.handed: list[tuple[list[ClaimedJob], float]] = []
        self.snapshots: dict[str, str] = {}
        self._crashed: WebhookDispatcher | None = None

    def holds(self, dispatcher: WebhookDispatcher) -> bool:
        """Whether `dispatcher` is the instance that crashed (and none has started since)."""
        return dispatcher is self._crashed

    def leave(
        self,
        dispatcher: WebhookDispatcher,
        groups: list[_Group],
        handed: list[tuple[list[ClaimedJob], float]],
        snapshots: Mapping[str, str],
    ) -> None:
        self._crashed = dispatcher
        self.groups += groups
        self.handed += handed
        if handed:
            self.snapshots.update(snapshots)

    def take_all(
        self,
    ) -> tuple[list[_Group], list[tuple[list[ClaimedJob], float]], dict[str, str]]:
        taken = (self.groups, self.handed, self.snapshots)
        self.groups, self.handed, self.snapshots = [], [], {}
        self._crashed = None
        return taken


class Handoff:
    """The batcher's way to give the jobs it queues straight to this process's running
    dispatcher (whichever instance runs now), instead of poking it to claim them.

    Before its transaction the batcher asks how many jobs of each URL to lease
    (`room`); after the commit it hands those over (`take`). Jobs an instance had not
    sent when it crashed go to the next instance (`UnsentJobs`); those of a process
    that died wait for their lease to end and are claimed then.
    Only this process's batcher queues these jobs, so with several workers each
    dispatches the coin ticks of the shards it holds.
    """

    def __init__(self, supervisor: Supervisor, name: str = ACTOR_NAME) -> None:
        self._supervisor = supervisor
        self._name = name

    def _dispatcher(self) -> WebhookDispatcher | None:
        if self._name not in self._supervisor.actor_names:
            return None
        actor = self._supervisor.actor(self._name)
        return actor if isinstance(actor, WebhookDispatcher) else None

    def room(self, jobs: Sequence[outbox.OutboxJob]) -> outbox.LeasePlan:
        """Which of these jobs to lease to the dispatcher, for how many seconds, and in
        which batches (batched delivery)."""
        dispatcher = self._dispatcher()
        if dispatcher is None:
            return outbox.LeasePlan([False] * len(jobs), 0.0, [None] * len(jobs))
        room = dispatcher.handoff_room({job.target_url for job in jobs})
        flags = []
        for job in jobs:
            left = room.get(job.target_url, 0)
            flags.append(left > 0)
            room[job.target_url] = left - 1
        dispatcher.spilled(
            {job.target_url for job, leased in zip(jobs, flags, strict=True) if not leased}
        )
        batches = handoff_batches(jobs, flags, dispatcher.batch_max_ticks)
        return outbox.LeasePlan(flags, dispatcher.lease_seconds, batches)

    def take(self, jobs: list[ClaimedJob], snapshots: Mapping[str, str], expires: float) -> None:
        dispatcher = self._dispatcher()
        if dispatcher is not None:
            dispatcher.take(jobs, snapshots, expires)
