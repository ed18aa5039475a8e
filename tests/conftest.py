"""Real PostgreSQL for every test: the embedded server, or TEST_DATABASE_URL.

Migrations run once into a template database; each test gets its own copy
(CREATE DATABASE ... TEMPLATE), which takes milliseconds and isolates tests
completely (procrastinate's approach).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg
import pytest
from ports import free_port
from webhook_receiver import WebhookReceiver

from storage.config import Settings, load_settings
from storage.db.embedded import EmbeddedPostgres
from storage.db.migrate import apply_migrations
from storage.db.pool import connect, create_pool
from storage.models.model_settings import MODELS_CHANNEL

FIXTURES = Path(__file__).parent / "fixtures"


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


class PgCluster:
    """Creates and drops per-test databases on one server."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.template: str | None = None

    def dsn(self, database: str) -> str:
        return _with_database(self.admin_dsn, database)

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def create_template(self) -> None:
        name = f"pp_template_{uuid.uuid4().hex[:8]}"
        await self._admin(f'CREATE DATABASE "{name}"')
        conn = await asyncpg.connect(self.dsn(name))
        try:
            await apply_migrations(conn, embedded=True)
        finally:
            await conn.close()
        self.template = name

    async def create_database(self, *, empty: bool = False) -> str:
        name = f"pp_test_{uuid.uuid4().hex[:12]}"
        template = "template0" if empty else self.template
        await self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    async def drop_database(self, name: str) -> None:
        await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgCluster]:
    external = os.environ.get("TEST_DATABASE_URL")
    embedded: EmbeddedPostgres | None = None
    if external:
        cluster = PgCluster(external)
    else:
        embedded = EmbeddedPostgres(tmp_path_factory.mktemp("pg"), database="postgres")
        embedded.start()
        cluster = PgCluster(embedded.dsn_for("postgres"))
    anyio.run(cluster.create_template)
    try:
        yield cluster
    finally:
        if external and cluster.template:
            anyio.run(cluster.drop_database, cluster.template)
        if embedded is not None:
            embedded.stop()


@pytest.fixture
async def db_dsn(pg_cluster: PgCluster) -> AsyncIterator[str]:
    """A fresh, migrated database (with the embedded foreign tables) for one test."""
    name = await pg_cluster.create_database()
    try:
        yield pg_cluster.dsn(name)
    finally:
        await pg_cluster.drop_database(name)


@pytest.fixture
async def empty_db_dsn(pg_cluster: PgCluster) -> AsyncIterator[str]:
    """A database with no tables at all (for migration tests)."""
    name = await pg_cluster.create_database(empty=True)
    try:
        yield pg_cluster.dsn(name)
    finally:
        await pg_cluster.drop_database(name)


@pytest.fixture
async def pool(db_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(db_dsn, min_size=1, max_size=5)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def settings(db_dsn: str, tmp_path: Path) -> Settings:
    """Settings for an in-process service on the test database, on a free port."""
    base = load_settings(env={})
    return base.replace(
        db_dsn=db_dsn,
        api_host="127.0.0.1",
        api_port=free_port(),
        model_storage_path=str(tmp_path / "models"),
        polling_interval_seconds=0.2,
        batch_timeout_seconds=0.02,
        shutdown_deadline_seconds=5.0,
        log_level="WARNING",
        # Test receivers listen on 127.0.0.1: allowed as an operator would allow a LAN
        # n8n, so the production default (loopback refused) stays as it is.
        webhook_allowed_networks="127.0.0.0/8,::1/128",
    )


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    """A webhook receiver on 127.0.0.1, stopped after the test."""
    hooks = await WebhookReceiver().start()
    try:
        yield hooks
    finally:
        await hooks.stop()


@pytest.fixture
async def notes(db_dsn: str) -> AsyncIterator[list[dict[str, Any]]]:
    """Every payload NOTIFYed on the models channel, as the model-sync actor would hear it."""
    received: list[dict[str, Any]] = []
    conn = await connect(db_dsn)
    await conn.add_listener(MODELS_CHANNEL, lambda *args: received.append(json.loads(args[3])))
    try:
        yield received
    finally:
        await conn.close()


@pytest.fixture(autouse=True)
def _main_module_restored() -> Iterator[None]:
    """Streamlit's AppTest installs the dashboard script as `__main__` and leaves it
    there; a later multiprocessing child (the model probe's forkserver children) then
    runs the dashboard script at start and dies, refusing every model imported after
    a dashboard test in the same session."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main
