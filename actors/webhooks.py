"""The webhook dispatcher: delivers outbox jobs to n8n, at least once, with retries.

It wakes on a short timer, when a retry falls due, when a delivery finishes and
when a predictor pokes it after committing new jobs. Jobs are claimed from the
outbox with a lease, so several dispatchers (or a restarted one) never hold the
same job; a job is settled with the lease as a fence.

Slow receivers stay contained: a host never has more than
`webhook_per_host_limit` deliveries in flight, and jobs of a saturated host
are not even claimed, so they cannot sit in a local queue while their lease
runs out or while other hosts wait behind them.

Several due jobs for the same URL, coin, tick and attempt number are sent as
ONE POST (CONTRACTS.md section 4: one POST per URL per processed coin) with
their predictions merged. The group is keyed on the attempt number too so a
failed combined POST is normally retried with the same members and therefore
the same Idempotency-Key.
"""

from __future__ import annotations

import email.utils
import hashlib
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import anyio
import asyncpg
import structlog
from anyio.abc import TaskGroup, TaskStatus

from actors import metrics
from actors.supervisor import Supervisor
from actors.webhook_payload import payload_json
from storage import outbox
from storage.config import Settings, redact_url
from storage.outbox import ClaimedJob
from storage.webhook_attempts import AttemptRecord, Outcome, record_attempts

ACTOR_NAME = "webhooks"

Decision = Literal["delivered", "retry", "failed", "dead"]


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What one POST came back with."""

    status_code: int | None
    reason: str | None  # None when 2xx; else timeout | connection | http_5xx | ...
    error: str | None
    retry_after: float | None  # seconds, from a Retry-After header
    latency_s: float


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


def retryable(result: DeliveryResult) -> bool:
    """Timeouts, connection errors, 5xx and 429 are worth another try; other 4xx are not."""
    if result.status_code is None:
        return result.reason in {"timeout", "connection", "client_error"}
    return result.status_code == 429 or result.status_code >= 500


def group_key_header(keys: Sequence[str]) -> str:
    """Idempotency-Key of a POST: the job's key, or a hash of the sorted keys it merges."""
    if len(keys) == 1:
        return keys[0]
    return hashlib.sha256("|".join(sorted(keys)).encode()).hexdigest()


def merged_body(jobs: Sequence[ClaimedJob]) -> str:
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
    )


def _host_key(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.lower()}"


class WebhookDispatcher:
    """Claims due outbox jobs and POSTs them; `poke()` after committing new jobs."""

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
    ) -> None:
        self.pool = pool
        self.timeout = timeout
        self.concurrency = concurrency
        self.per_host_limit = per_host_limit
        self.max_age_seconds = max_age_seconds
        self.max_attempts = max_attempts
        self.poll_interval = poll_interval
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.coalesce_window = coalesce_window
        # The lease must outlive a POST (bounded by the timeout) plus its settlement,
        # or a second dispatcher could claim a job that is still being sent.
        self.lease_seconds = lease_seconds if lease_seconds is not None else 2 * timeout + 10
        self._wake = anyio.Event()
        self._poked = False
        self._stopping = False
        self._in_flight = 0
        self._per_host: Counter[str] = Counter()
        # Every URL seen per host, so that all URLs of a saturated host can be skipped.
        self._host_urls: dict[str, set[str]] = {}
        self._depth_updated = 0.0
        self._group_size = 1.0  # jobs per POST lately (models per coin tick)
        self.delivered_jobs = 0  # by this instance (operators and tests look at it)
        self._log = structlog.get_logger(__name__).bind(actor=ACTOR_NAME)

    @classmethod
    def from_settings(
        cls, settings: Settings, pool: asyncpg.Pool, **overrides: Any
    ) -> WebhookDispatcher:
        options: dict[str, Any] = {
            "timeout": settings.n8n_webhook_timeout,
            "concurrency": settings.webhook_concurrency,
            "per_host_limit": settings.webhook_per_host_limit,
            "max_age_seconds": settings.webhook_max_age_seconds,
            "max_attempts": settings.webhook_max_attempts,
        }
        options.update(overrides)
        return cls(pool, **options)

    # ---- control (call from the event loop; never blocks) ----------------------------

    def poke(self) -> None:
        """New jobs were committed: look now (after a short coalescing window)."""
        self._poked = True
        self._wake.set()

    def request_stop(self) -> None:
        """Stop claiming; deliveries in flight finish (or come back after their lease)."""
        self._stopping = True
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    # ---- the loop --------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        connector = aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=self.per_host_limit)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
            anyio.create_task_group() as tg,
        ):
            self._log.info(
                "webhook_dispatcher_started",
                concurrency=self.concurrency,
                per_host_limit=self.per_host_limit,
            )
            task_status.started()
            wait: float | None = 0.0
            while not self._stopping:
                await self._sleep(wait)
                if self._stopping:
                    break
                wait = await self._claim_and_start(tg, session)
            # Leaving the task group waits for the deliveries in flight.
        self._log.info("webhook_dispatcher_stopped")

    async def _sleep(self, seconds: float | None) -> None:
        timeout = self.poll_interval if seconds is None else min(seconds, self.poll_interval)
        if timeout > 0 and not self._wake.is_set():
            with anyio.move_on_after(timeout):
                await self._wake.wait()
        self._wake = anyio.Event()
        if self._poked:
            # Predictors of one batch commit within milliseconds of each other; a short
            # pause lets their jobs for the same coin go out as one POST.
            self._poked = False
            await anyio.sleep(self.coalesce_window)

    def _saturated_urls(self) -> list[str]:
        return sorted(
            url
            for host, urls in self._host_urls.items()
            if self._per_host[host] >= self.per_host_limit
            for url in urls
        )

    async def _claim_and_start(self, tg: TaskGroup, session: aiohttp.ClientSession) -> float | None:
        """Start what fits; returns how long to wait (None: until woken or the timer)."""
        free = self.concurrency - self._in_flight
        if free <= 0:
            return None
        excluded = self._saturated_urls()
        # `free` counts POSTs, a claim counts jobs: one POST carries the jobs of every
        # model for a coin tick. Claiming one job per free slot meant a claim query per
        # POST with ten models, and under load the claims were most of the database's work.
        limit = max(free, round(free * self._group_size))
        async with self.pool.acquire() as conn:
            jobs = await outbox.claim(
                conn, limit=limit, lease_seconds=self.lease_seconds, exclude_urls=excluded
            )
            await self._update_depth(conn)
            groups: dict[tuple[str, str, datetime, int], list[ClaimedJob]] = {}
            for job in jobs:
                self._host_urls.setdefault(_host_key(job.target_url), set()).add(job.target_url)
                key = (job.target_url, job.coin_id, job.data_timestamp, job.attempts)
                groups.setdefault(key, []).append(job)
            if groups:
                size = len(jobs) / len(groups)
                self._group_size = 0.8 * self._group_size + 0.2 * size
            no_room: list[ClaimedJob] = []
            for group in groups.values():
                url = group[0].target_url
                host = _host_key(url)
                if self._in_flight >= self.concurrency or self._per_host[host] >= (
                    self.per_host_limit
                ):
                    no_room.extend(group)
                    continue
                self._in_flight += 1
                self._per_host[host] += 1
                tg.start_soon(self._deliver_group, session, group)
            if no_room:
                await outbox.release(conn, [job.lease for job in no_room])
            if len(jobs) >= limit:
                return 0.0  # maybe more due; look again as soon as there is room
            return await outbox.seconds_until_next_due(conn, exclude_urls=self._saturated_urls())

    async def _update_depth(self, conn: asyncpg.Connection) -> None:
        now = time.monotonic()
        # A count over the outbox costs the database real work under load: every 5 s.
        if now - self._depth_updated >= 5.0:
            self._depth_updated = now
            metrics.WEBHOOK_OUTBOX_DEPTH.set({}, await outbox.outbox_depth(conn))

    # ---- one delivery ------------------------------------------------------------------

    async def _deliver_group(self, session: aiohttp.ClientSession, jobs: list[ClaimedJob]) -> None:
        url = jobs[0].target_url
        try:
            result = await self._post(session, jobs)
            await self._settle(jobs, result)
        finally:
            self._in_flight -= 1
            self._per_host[_host_key(url)] -= 1
            self._wake.set()

    async def _post(self, session: aiohttp.ClientSession, jobs: list[ClaimedJob]) -> DeliveryResult:
        body = merged_body(jobs).encode()
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": group_key_header([job.idempotency_key for job in jobs]),
        }
        started = time.monotonic()
        status: int | None = None
        retry_after: float | None = None
        reason: str | None = None
        error: str | None = None
        try:
            # Redirects are not followed: aiohttp would turn the POST into a GET.
            async with session.post(
                jobs[0].target_url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                # Only the start of the body is kept (for the error message); a receiver
                # that streams megabytes must not slow the dispatcher down.
                head = await response.content.read(1024)
            if not 200 <= status < 300:
                reason = "http_429" if status == 429 else f"http_{status // 100}xx"
                error = f"HTTP {status}: {head.decode(errors='replace')[:200]}".strip()
        except TimeoutError:
            reason, error = "timeout", f"no answer within {self.timeout}s"
        except aiohttp.InvalidURL as exc:
            reason, error = "invalid_url", f"invalid URL: {exc}"
        except aiohttp.ClientConnectionError as exc:
            reason, error = "connection", f"{type(exc).__name__}: {exc}"
        except aiohttp.ClientError as exc:
            reason, error = "client_error", f"{type(exc).__name__}: {exc}"
        except Exception as exc:
            # A job that breaks the HTTP client would crash the actor, come back after
            # its lease and crash it again: it is logged and given up instead.
            self._log.exception(
                "webhook_unexpected_error",
                job_ids=[job.id for job in jobs],
                url=redact_url(jobs[0].target_url),
            )
            reason, error = "unexpected", f"{type(exc).__name__}: {exc}"
        latency = time.monotonic() - started
        metrics.WEBHOOK_LATENCY.observe({}, latency)
        return DeliveryResult(status, reason, error, retry_after, latency)

    def backoff(self, attempt: int) -> float:
        """Seconds before retry number `attempt` (1-based): exponential, with jitter."""
        ceiling = min(self.backoff_max, self.backoff_base * 2.0 ** (attempt - 1))
        return ceiling * random.uniform(0.5, 1.0)

    def decide(
        self, result: DeliveryResult, *, attempt: int, created_at: datetime
    ) -> tuple[Decision, float]:
        """(outcome of this attempt, seconds until the next one)."""
        if result.reason is None:
            return "delivered", 0.0
        if not retryable(result):
            return "failed", 0.0
        delay = result.retry_after if result.retry_after is not None else self.backoff(attempt)
        age_at_retry = (datetime.now(UTC) - created_at).total_seconds() + delay
        if attempt >= self.max_attempts or age_at_retry > self.max_age_seconds:
            return "dead", 0.0
        return "retry", delay

    async def _settle(self, jobs: list[ClaimedJob], result: DeliveryResult) -> None:
        attempt = jobs[0].attempts + 1
        oldest = min(job.created_at for job in jobs)
        decision, delay = self.decide(result, attempt=attempt, created_at=oldest)
        leases = [job.lease for job in jobs]
        error = result.error or ""
        async with self.pool.acquire() as conn, conn.transaction():
            if decision == "delivered":
                settled = await outbox.mark_delivered(conn, leases, status_code=result.status_code)
            elif decision == "retry":
                settled = await outbox.retry_at(
                    conn,
                    leases,
                    delay_seconds=delay,
                    error=error,
                    status_code=result.status_code,
                )
            else:
                settled = await outbox.mark_dead(
                    conn, leases, error=error, status_code=result.status_code
                )
            outcome: Outcome = decision
            await record_attempts(
                conn,
                [
                    AttemptRecord(
                        outbox_id=job.id,
                        attempt=job.attempts + 1,
                        target_url=job.target_url,
                        active_model_ids=job.active_model_ids,
                        model_ids=job.model_ids,
                        status_code=result.status_code,
                        latency_ms=round(result.latency_s * 1000, 3),
                        error=result.error,
                        outcome=outcome,
                    )
                    for job in jobs
                ],
            )
        self._count(decision, result, len(jobs))
        if decision == "delivered":
            self.delivered_jobs += len(settled)
        context = {
            "url": redact_url(jobs[0].target_url),
            "job_ids": [job.id for job in jobs],
            "coin_id": jobs[0].coin_id,
            "active_model_ids": sorted({m for job in jobs for m in job.active_model_ids}),
            "model_ids": sorted({m for job in jobs for m in job.model_ids}),
            "attempt": attempt,
            "status_code": result.status_code,
            "latency_ms": round(result.latency_s * 1000, 1),
        }
        lost = sorted({job.id for job in jobs} - set(settled))
        if lost:
            # Our lease ran out mid-delivery and another dispatcher took the job over.
            self._log.warning("webhook_lease_lost", lost_job_ids=lost, **context)
        if decision == "delivered":
            self._log.debug("webhook_delivered", **context)
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

    @staticmethod
    def _count(decision: Decision, result: DeliveryResult, jobs: int) -> None:
        if decision == "delivered":
            metrics.WEBHOOK_SENT.add({}, jobs)
            return
        metrics.WEBHOOK_FAILED.add({"reason": result.reason or "unknown"}, jobs)
        if decision == "retry":
            metrics.WEBHOOK_RETRIED.add({}, jobs)
        else:
            metrics.WEBHOOK_DEAD.add({}, jobs)


def poker(supervisor: Supervisor, name: str = ACTOR_NAME) -> Callable[[], None]:
    """A function that pokes whichever dispatcher instance is running now (if any).

    Predictors hold this rather than the dispatcher, which the supervisor replaces
    when it restarts; a missed poke only costs up to one poll interval.
    """

    def poke() -> None:
        if name in supervisor.actor_names:
            actor = supervisor.actor(name)
            if isinstance(actor, WebhookDispatcher):
                actor.poke()

    return poke
