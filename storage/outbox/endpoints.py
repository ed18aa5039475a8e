"""Queries on `webhook_endpoints`: which webhook URLs are failing, and which are missing.

A row exists while a URL's latest answer was a failure: `failing_since` is the
first failure of that streak (the 404 grace of actors.webhooks.retry counts from
it), `missing_since` is set once 404s outlasted the grace. The next success
deletes the row and releases the URL's waiting jobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True, slots=True)
class EndpointState:
    target_url: str
    failing_since: datetime
    missing_since: datetime | None
    last_status_code: int | None


@dataclass(frozen=True, slots=True)
class Failure:
    """The latest failure of a URL in a flush, and the start of its streak."""

    target_url: str
    failing_since: datetime
    status_code: int | None
    missing: bool  # past the grace: the URL's jobs wait


async def load(conn: asyncpg.Connection, urls: Sequence[str]) -> dict[str, EndpointState]:
    """The failing URLs among `urls`."""
    rows = await conn.fetch(
        "SELECT target_url, failing_since, missing_since, last_status_code"
        " FROM webhook_endpoints WHERE target_url = ANY($1::text[])",
        list(urls),
    )
    return {
        r["target_url"]: EndpointState(
            r["target_url"], r["failing_since"], r["missing_since"], r["last_status_code"]
        )
        for r in rows
    }


async def record_failures(conn: asyncpg.Connection, failures: Sequence[Failure]) -> list[str]:
    """Upsert failing URLs (a streak keeps its first failure); returns the URLs that
    became missing with this call, so each is warned about once."""
    if not failures:
        return []
    await conn.execute(
        """
        INSERT INTO webhook_endpoints (target_url, failing_since, last_status_code)
        SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::int[])
        ON CONFLICT (target_url) DO UPDATE
        SET failing_since = least(webhook_endpoints.failing_since, excluded.failing_since),
            last_status_code = excluded.last_status_code, updated_at = now()
        """,
        [f.target_url for f in failures],
        [f.failing_since for f in failures],
        [f.status_code for f in failures],
    )
    missing = [f.target_url for f in failures if f.missing]
    if not missing:
        return []
    rows = await conn.fetch(
        "UPDATE webhook_endpoints SET missing_since = now()"
        " WHERE target_url = ANY($1::text[]) AND missing_since IS NULL RETURNING target_url",
        missing,
    )
    return sorted(r["target_url"] for r in rows)


async def record_successes(conn: asyncpg.Connection, urls: Sequence[str]) -> list[str]:
    """Forget failing streaks of URLs that answered 2xx; returns those that were missing."""
    if not urls:
        return []
    rows = await conn.fetch(
        "DELETE FROM webhook_endpoints WHERE target_url = ANY($1::text[])"
        " RETURNING target_url, missing_since",
        list(urls),
    )
    return sorted(r["target_url"] for r in rows if r["missing_since"] is not None)


async def missing(conn: asyncpg.Connection) -> list[EndpointState]:
    """URLs marked missing that still matter (jobs wait on them, or they answered within
    the hour), oldest first; one left behind by a URL change drops out."""
    rows = await conn.fetch(
        """
        SELECT e.target_url, e.failing_since, e.missing_since, e.last_status_code
        FROM webhook_endpoints e
        WHERE e.missing_since IS NOT NULL
          AND (e.updated_at > now() - interval '1 hour'
               OR EXISTS (SELECT 1 FROM webhook_outbox o
                          WHERE o.status = 'waiting' AND o.target_url = e.target_url))
        ORDER BY e.missing_since
        """
    )
    return [
        EndpointState(
            r["target_url"], r["failing_since"], r["missing_since"], r["last_status_code"]
        )
        for r in rows
    ]
