"""System routes: health, metrics, configuration, service statistics."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import anyio
from aiohttp import web
from aioprometheus.renderer import render

from actors.ports import ServiceState, metrics
from storage.models.library_versions import library_versions
from storage.models.overview import load_stats
from storage.version import VERSION
from web.context import ctx
from web.metrics_merge import merge_expositions
from web.routes.alert_config import webhook_health

routes = web.RouteTableDef()

EVALUATOR = "evaluator"
# Actors without which no tick is predicted, and what stops while one is failing.
INTAKE_ACTORS = {
    "poller": "no coin_metrics row is read",
    "batcher": "no tick reaches the models",
}
# Clocks of two NTP-synced hosts differ by milliseconds; more than this is skew.
CLOCK_SKEW_TOLERANCE_SECONDS = 5.0


def _failing_actors(state: ServiceState, grace: float, checks: dict[str, Any]) -> list[str]:
    """A reason per intake actor down or crash-looping for longer than `grace`."""
    reasons = []
    failing: dict[str, float] = {}
    for name, consequence in INTAKE_ACTORS.items():
        seconds = state.actor_failing_for(name, grace)
        if seconds is None:
            continue
        failing[name] = round(seconds, 1)
        if seconds >= grace:
            reasons.append(f"{name} down or restarting for {seconds:.0f}s: {consequence}")
    checks["actors_failing_seconds"] = failing
    return reasons


async def health_report(request: web.Request) -> tuple[bool, dict[str, Any]]:
    """Healthy only when the database answers, intake is alive (listener or polling, poller
    and batcher not failing beyond a grace), the evaluator's cycles do not keep failing,
    and the lag is bounded on both sides (negative: the collector's clock runs ahead)."""
    context = ctx(request)
    state, settings = context.state, context.settings
    reasons: list[str] = []
    checks: dict[str, Any] = {}
    try:
        with anyio.fail_after(2.0):
            async with context.pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
        reasons.append("database does not answer")
    intake_running = "listener" in state.actors_up or "poller" in state.actors_up
    if intake_running:
        polling_recent = state.last_poll_at is not None and time.time() - state.last_poll_at < max(
            5.0, 3 * settings.polling_interval_seconds
        )
        checks["listener"] = (
            "up" if state.listener_up else ("down, polling covers" if polling_recent else "down")
        )
        if not state.listener_up and not polling_recent:
            reasons.append("listener is down and polling is not running")
    reasons += _failing_actors(state, settings.health_actor_grace_seconds, checks)
    workers = context.workers
    if workers is not None:  # serve --workers N: every worker up, or coming back soon
        now = time.monotonic()
        gone = {i: now - t for i, t in workers.down_since.items()}
        checks["workers"] = {"configured": workers.count, "running": workers.running}
        late = [i for i, s in gone.items() if s >= settings.health_actor_grace_seconds]
        if late:
            reasons.append(f"worker(s) {late} down for {max(gone.values()):.0f}s")
    failed = state.sweeps_failed_in_a_row.get(EVALUATOR, 0)
    checks["evaluator_failed_in_a_row"] = failed
    if failed >= settings.health_max_failed_evaluations:
        reasons.append(f"evaluator failed its last {failed} cycles")
    lag = state.intake_lag_seconds
    checks["intake_lag_seconds"] = None if lag is None else round(lag, 3)
    # A negative lag is not "very fresh": the collector's clock runs ahead of ours.
    skew = 0.0 if lag is None or lag >= -CLOCK_SKEW_TOLERANCE_SECONDS else -lag
    checks["clock_skew_seconds"] = round(skew, 3)
    if (
        lag is not None
        and state.last_tick_at is not None
        and time.time() - state.last_tick_at < settings.health_max_lag_seconds
    ):
        if lag > settings.health_max_lag_seconds:
            reasons.append(f"intake lag {lag:.1f}s exceeds {settings.health_max_lag_seconds:.0f}s")
        elif skew:
            reasons.append(
                f"clock skew: the newest tick is dated {skew:.1f}s ahead of this host's clock"
            )
    down = sorted(name for name, up in state.actors_up.items() if not up)
    checks["actors_down"] = down
    checks["actor_restarts"] = dict(state.actor_restarts)
    # Not a reason to be degraded (the pipeline went on without them), but visible.
    checks["ticks_store_failed"] = state.ticks_store_failed
    checks["last_store_failure"] = state.last_store_failure
    checks["ticks_skipped"] = dict(state.ticks_skipped)
    checks["last_tick_skipped"] = state.last_tick_skipped
    if state.draining:
        reasons.append("service is shutting down")
    # Lost webhooks are listed but answer 200 ("warning"): a restart cannot bring a
    # deleted n8n workflow back, and a 503 would have an orchestrator take the API
    # (needed to fix the URL and retry the jobs) and every model's predictions away.
    checks["webhooks"], warnings = await webhook_health(context.pool)
    body = {
        "status": "degraded" if reasons else "warning" if warnings else "healthy",
        "reasons": reasons + warnings,
        "checks": checks,
        "version": VERSION,
        "libraries": library_versions(),
        "uptime_seconds": round(state.uptime_seconds, 1),
        "demo": state.demo,
    }
    return not reasons, body


@routes.get("/health")
@routes.get("/api/health")
async def health(request: web.Request) -> web.Response:
    healthy, body = await health_report(request)
    return web.json_response(body, status=200 if healthy else 503)


@routes.get("/metrics")
@routes.get("/api/metrics")
async def metrics_endpoint(request: web.Request) -> web.Response:
    state = ctx(request).state
    if state.last_notification_at is not None:
        metrics.LISTENER_NOTIFICATION_AGE.set({}, time.time() - state.last_notification_at)
    scrape = ctx(request).worker_metrics
    if scrape is not None:  # serve --workers N: the workers' metrics merged in
        own, _ = render(metrics.REGISTRY, [])
        merged = merge_expositions(bytes(own).decode(), await scrape())
        return web.Response(text=merged, content_type="text/plain", charset="utf-8")
    body, headers = render(metrics.REGISTRY, request.headers.getall("Accept", []))
    return web.Response(body=body, headers=headers)


@routes.get("/api/config")
async def config_endpoint(request: web.Request) -> web.Response:
    return web.json_response(
        {**ctx(request).settings.public_view(), "libraries": library_versions()}
    )


@routes.get("/api/stats")
async def stats_endpoint(request: web.Request) -> web.Response:
    context = ctx(request)
    state = context.state
    database = await load_stats(context.pool)
    last = database.get("last_prediction_at")
    assert last is None or isinstance(last, datetime)
    body = {
        "version": VERSION,
        "uptime_seconds": round(state.uptime_seconds, 1),
        "demo": state.demo,
        "listener_up": state.listener_up,
        "intake_lag_seconds": state.intake_lag_seconds,
        "actors": {name: ("up" if up else "down") for name, up in state.actors_up.items()},
        "actor_restarts": dict(state.actor_restarts),
        "ticks_store_failed": state.ticks_store_failed,
        **{k: v for k, v in database.items() if k != "last_prediction_at"},
        "last_prediction_at": last.isoformat() if last is not None else None,
    }
    return web.json_response(body)
