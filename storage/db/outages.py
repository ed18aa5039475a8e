"""Which failures are an expected database outage, and how to say so.

A PostgreSQL restart, a failover or `pg_terminate_backend` makes every actor
that talks to the database fail at once. That is not a crash: the actors log
one warning with a reason and a count, retry on a short fixed interval, and
are back as soon as the database is (no exponential crash back-off to sit out).
"""

from __future__ import annotations

import asyncpg

DATABASE_UNAVAILABLE = "database unavailable"
CONNECTION_TERMINATED = "connection terminated by the server"

_TERMINATED = (
    asyncpg.AdminShutdownError,  # pg_terminate_backend, server shutting down
    asyncpg.ConnectionDoesNotExistError,  # closed in the middle of an operation
    asyncpg.CannotConnectNowError,  # the server is starting or stopping
    asyncpg.InternalClientError,  # asyncpg's "cannot switch to state N" after a kill
    asyncpg.InterfaceError,  # "connection is closed", "pool is closed"
)


def outage_reason(exc: BaseException) -> str | None:
    """The outage behind `exc` (also inside exception groups, where every leaf must be
    one), or None for a real failure that deserves a traceback."""
    if isinstance(exc, BaseExceptionGroup):
        reasons = {outage_reason(inner) for inner in exc.exceptions}
        if None in reasons or not reasons:
            return None
        return CONNECTION_TERMINATED if CONNECTION_TERMINATED in reasons else DATABASE_UNAVAILABLE
    if isinstance(exc, _TERMINATED):
        return CONNECTION_TERMINATED
    if isinstance(exc, ConnectionError | TimeoutError):
        # Refused / reset connections, and a connect that timed out.
        return DATABASE_UNAVAILABLE
    if isinstance(exc, FileNotFoundError | OSError) and _is_socket_error(exc):
        return DATABASE_UNAVAILABLE
    return None


def _is_socket_error(exc: OSError) -> bool:
    """The Unix socket of a stopped server is gone (FileNotFoundError on its path), or
    a TCP connect failed: the errors asyncpg raises while PostgreSQL is down."""
    text = str(exc)
    return ".s.PGSQL." in text or "Connect call failed" in text or exc.errno in (2, 111, 104)
