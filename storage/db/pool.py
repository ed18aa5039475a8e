"""asyncpg pool with the codecs every query relies on.

Codecs are registered once per connection so that no caller ever parses JSON
or converts Decimals by hand (the service being replaced did, and turned 0
into NULL on the way).
"""

from __future__ import annotations

import gc
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg
import asyncpg.exceptions._base as asyncpg_errors

# Errors the same rows hit every time: a data exception (SQLSTATE class 22, e.g. a
# numeric overflow), an integrity constraint violation (class 23: a CHECK, a foreign
# or unique key we did not foresee), a trigger's RAISE EXCEPTION (P0001), or a value
# asyncpg cannot encode. Everything else (lost connections, serialization failures,
# deadlocks, a cancelled statement, a server out of resources) is transient.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.RaiseError,
    asyncpg_errors.DataError,
)

T = TypeVar("T")
R = TypeVar("R")


async def store_in_halves(
    parts: Sequence[T],
    error: Exception,
    store: Callable[[Sequence[T]], Awaitable[R]],
    on_refused: Callable[[T, Exception], None],
) -> list[R]:
    """After a store of `parts` failed with a PERMANENT_ERRORS `error`: each half stored
    on its own, recursively, so every part the database accepts is stored once and a
    part it refuses alone goes to `on_refused` (about 2 log2(n) statements for one bad
    part among n). Returns the results of the stores that went through."""
    if len(parts) <= 1:
        for part in parts:
            on_refused(part, error)
        return []
    half = len(parts) // 2
    results: list[R] = []
    for group in (parts[:half], parts[half:]):
        try:
            results.append(await store(group))
        except PERMANENT_ERRORS as exc:
            results += await store_in_halves(group, exc, store, on_refused)
    return results


def _encode_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def int_array_literal(values: Sequence[int]) -> str:
    """A bigint[] as its text literal ('{1,2}'), for multi-row inserts through unnest():
    unnest() flattens a bigint[][] instead of yielding one array per row."""
    return "{" + ",".join(str(int(v)) for v in values) + "}"


async def init_connection(conn: asyncpg.Connection) -> None:
    """jsonb/json <-> Python objects, numeric -> float."""
    for typename in ("jsonb", "json"):
        await conn.set_type_codec(
            typename, encoder=_encode_json, decoder=json.loads, schema="pg_catalog"
        )
    await conn.set_type_codec(
        "numeric", encoder=str, decoder=float, schema="pg_catalog", format="text"
    )


async def connect(dsn: str, **kwargs: Any) -> asyncpg.Connection:
    """A single connection with our codecs (for the listener and for scripts)."""
    conn: asyncpg.Connection = await asyncpg.connect(dsn, **kwargs)
    await init_connection(conn)
    return conn


async def _released(conn: asyncpg.Connection) -> None:
    """What the pool does to a released connection beyond asyncpg's own clean-up (which
    rolls back an open transaction and drops listeners): nothing.

    asyncpg's default sends `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL;` on every release: about a third of the service's round trips under
    `bench.py pipeline` (issue 23). Pooled connections keep no session state to undo:
    LISTEN runs on dedicated connections (listener, model sync), nothing SETs a session
    variable, cursors live in transactions, shard locks are transaction-scoped, and the
    one session advisory lock (`storage.models.model_import.model_lock`) is unlocked by its
    holder before release. New code must keep it so.
    """
    del conn


class PooledConnection(asyncpg.Connection):  # type: ignore[misc]  # asyncpg is untyped
    """A pool connection that counts as closed once its server has hung up on it.

    A backend killed while its connection idles in the pool (pg_terminate_backend, a
    restart) sends a FATAL error before it closes the socket. asyncpg, expecting nothing
    while idle, then holds that message as a failed result in its ERROR_CONSUME state
    until the end-of-file arrives; a query in between fails with InternalClientError
    "another operation is in progress" (an actor restart for nothing). `is_closed` is
    what the pool asks before handing a connection out, so a connection in that state
    is replaced by a fresh one instead (its socket closed at once).
    """

    def is_closed(self) -> bool:
        if super().is_closed():
            return True
        if _holds_protocol_failure(self._protocol):
            self._transport.abort()
            return True
        return False


def _holds_protocol_failure(protocol: object) -> bool:
    """Whether asyncpg's protocol keeps an InternalClientError as its pending result:
    it does only after a server message it could not place (its state is not visible
    from Python, its result is among the objects it references). No round trip."""
    return any(type(ref) is asyncpg.InternalClientError for ref in gc.get_referents(protocol))


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=init_connection,
        reset=_released,
        connection_class=PooledConnection,
        # Prepared statements stay on; a pgbouncer in transaction mode would need 0.
        command_timeout=60,
    )
    assert pool is not None
    return pool
