"""`/health` tells the truth: 503 with a reason while intake or the evaluator keeps
failing, and while the collector's clock runs ahead of ours; 200 again once it stops.

The real service on a real PostgreSQL; the failures are real ones an operator meets:
the collector's table renamed away during a migration (every read fails), a column
the history load needs renamed (only the batcher fails), a collector clock ahead.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from coin_rows import coin_rows, insert_rows
from service_runner import predictors_running, running_service, service_get
from test_intake_total import FEATURES, insert_raw
from waiting import wait_for
from webhook_receiver import add_trained_models

from actors.app.service import Service
from storage.config import Settings
from storage.db.pool import connect


def status_is(service: Service, expected: int, reason: str = "") -> Any:
    """A probe for `wait_for`: the body once /health answers `expected` (with a reason
    containing `reason`)."""

    async def probe() -> dict[str, Any] | None:
        status, body = await service_get(service, "/health")
        if status != expected or not any(reason in r for r in body["reasons"] or [""]):
            return None
        return body

    return probe


def strict(settings: Settings) -> Settings:
    return settings.replace(
        health_actor_grace_seconds=0.5,
        health_max_failed_evaluations=3,
        evaluation_interval_seconds=0.1,
        batch_timeout_seconds=0.01,
    )


async def test_health_is_503_while_the_poller_and_the_evaluator_keep_failing(
    settings: Settings, db_dsn: str
) -> None:
    """Before, /health answered 200 "healthy" with actors_down: ["poller"]."""
    conn = await connect(db_dsn)
    try:
        async with running_service(strict(settings)) as service:
            await wait_for(status_is(service, 200), what="healthy at start")
            await conn.execute("ALTER TABLE coin_metrics RENAME TO coin_metrics_away")
            body = await wait_for(
                status_is(service, 503, "poller down or restarting"), what="503 for the poller"
            )
            body = await wait_for(
                status_is(service, 503, "evaluator failed its last"), what="503 for the evaluator"
            )
            assert body["checks"]["database"] == "ok"
            assert body["checks"]["evaluator_failed_in_a_row"] >= 3
            assert body["checks"]["actors_failing_seconds"]["poller"] >= 0.5
            await conn.execute("ALTER TABLE coin_metrics_away RENAME TO coin_metrics")
            body = await wait_for(status_is(service, 200), timeout=20, what="healthy again")
            assert body["checks"]["evaluator_failed_in_a_row"] == 0
    finally:
        await conn.close()


async def test_health_is_503_while_the_batcher_crash_loops(
    settings: Settings, db_dsn: str, tmp_path: Path
) -> None:
    """The listener and the poller are up; the batcher cannot load history and restarts
    again and again: no tick is predicted, so the service is not healthy."""
    conn = await connect(db_dsn)
    try:
        models = await add_trained_models(conn, tmp_path, 1001, FEATURES)
        async with running_service(strict(settings)) as service:
            await wait_for(lambda: predictors_running(service) == len(models), what="models")
            await wait_for(status_is(service, 200), what="healthy at start")
            await conn.execute(
                "ALTER TABLE coin_metrics RENAME COLUMN unique_signer_ratio TO signer_ratio"
            )
            now = datetime.now(UTC).isoformat()
            await insert_raw(conn, [{"mint": "coinA", "timestamp": now, "price_close": "1"}])
            body = await wait_for(
                status_is(service, 503, "batcher down or restarting"), what="503 for the batcher"
            )
            assert body["checks"]["listener"] == "up"
            assert "poller" not in body["checks"]["actors_failing_seconds"]
            await conn.execute(
                "ALTER TABLE coin_metrics RENAME COLUMN signer_ratio TO unique_signer_ratio"
            )
            await wait_for(status_is(service, 200), timeout=30, what="healthy again")
    finally:
        await conn.close()


async def test_health_reports_a_collector_clock_ahead_as_clock_skew(
    settings: Settings, db_dsn: str
) -> None:
    """A tick dated a minute ahead made the intake lag negative, and /health said
    nothing; rows further ahead than INTAKE_MAX_FUTURE_SECONDS are skipped."""
    conn = await asyncpg.connect(db_dsn)
    try:
        async with running_service(strict(settings)) as service:
            await wait_for(status_is(service, 200), what="healthy at start")
            ahead = datetime.now(UTC) + timedelta(seconds=60)
            await insert_rows(conn, coin_rows("skewed", 1, start=ahead))
            body = await wait_for(status_is(service, 503, "clock skew"), what="503 for skew")
            assert 50 < body["checks"]["clock_skew_seconds"] <= 60
            assert body["checks"]["intake_lag_seconds"] < -50
            await insert_rows(conn, coin_rows("skewed", 1, start=datetime.now(UTC)))
            body = await wait_for(status_is(service, 200), what="healthy after a fresh tick")
            assert body["checks"]["clock_skew_seconds"] == 0
    finally:
        await conn.close()
