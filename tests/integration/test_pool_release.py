"""A released pool connection is handed on without a reset round trip (issue 23):
what a next holder could notice must still be clean."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg
from waiting import wait_for

from storage.db.pool import create_pool
from storage.models.model_import import model_lock

ADVISORY_LOCKS = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


async def test_a_transaction_left_open_is_rolled_back_before_the_connection_is_reused(
    db_dsn: str,
) -> None:
    pool = await create_pool(db_dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.execute("CREATE TEMP TABLE left_behind (x int)")
        async with pool.acquire() as conn:  # the same (only) connection
            assert not conn.is_in_transaction()
            found = await conn.fetchval("SELECT to_regclass('pg_temp.left_behind') IS NOT NULL")
            assert found is False
    finally:
        await pool.close()


async def test_a_model_lock_is_free_for_another_session_once_its_holder_is_done(
    db_dsn: str,
) -> None:
    pool = await create_pool(db_dsn, min_size=1, max_size=1)
    other = await asyncpg.connect(db_dsn)
    try:
        async with model_lock(pool, 7):
            assert await other.fetchval(ADVISORY_LOCKS) == 1
        assert await other.fetchval(ADVISORY_LOCKS) == 0
        async with model_lock(pool, 7):  # and the model can be locked again
            pass
        assert await other.fetchval(ADVISORY_LOCKS) == 0
    finally:
        await other.close()
        await pool.close()


class _HoldingProxy:
    """A TCP relay to the test's PostgreSQL that keeps the client's side open after the
    server hung up: the window between a killed backend's FATAL message and its socket's
    end-of-file, made as long as the test needs."""

    def __init__(self, dsn: str) -> None:
        parts = urlsplit(dsn)
        query = parse_qs(parts.query)
        self._dsn = parts
        self._host = unquote(query["host"][0]) if "host" in query else parts.hostname or ""
        self._port = parts.port or 5432
        self.server_hung_up = 0
        self._clients: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.append(writer)
        if self._host.startswith("/"):
            up_r, up_w = await asyncio.open_unix_connection(f"{self._host}/.s.PGSQL.{self._port}")
        else:
            up_r, up_w = await asyncio.open_connection(self._host, self._port)
        upstream = asyncio.ensure_future(self._relay(reader, up_w))
        await self._relay(up_r, writer)
        self.server_hung_up += 1  # and the client's socket stays open
        upstream.cancel()
        up_w.close()

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        auth = self._dsn.netloc.rpartition("@")[0]
        return f"postgresql://{auth}@127.0.0.1:{port}{self._dsn.path}"

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._clients:
            writer.close()


async def test_a_connection_whose_backend_was_killed_while_idle_is_not_handed_out(
    db_dsn: str,
) -> None:
    """The poller's actor restarted with InternalClientError "another operation is in
    progress" when its pooled connection's backend had been terminated while idle."""
    admin = await asyncpg.connect(db_dsn)
    proxy = _HoldingProxy(db_dsn)
    async with proxy as proxied_dsn:
        pool = await create_pool(proxied_dsn, min_size=1, max_size=1)
        try:
            async with pool.acquire() as conn:
                killed = conn.get_server_pid()
            await admin.execute("SELECT pg_terminate_backend($1)", killed)
            await wait_for(lambda: proxy.server_hung_up, what="the backend to hang up")
            await admin.fetchval("SELECT 1")  # the loop has read the FATAL message by now
            async with pool.acquire() as conn:
                assert await conn.fetchval("SELECT pg_backend_pid()") != killed
        finally:
            pool.terminate()  # a graceful close would wait for the held-open end-of-file
    await admin.close()
