"""Embedded PostgreSQL for the default (no DB_DSN) mode.

`pgserver` ships the server binaries inside its wheel, so a newcomer needs
nothing but Python. The server is shared by processes using the same data
directory and stopped when the last of them exits.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from urllib.parse import quote

import structlog

log = structlog.get_logger(__name__)

DATABASE_NAME = "pump_predictor"


class EmbeddedPostgres:
    """A started embedded server; `dsn` points at our database inside it."""

    def __init__(self, data_dir: str | Path, database: str = DATABASE_NAME) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.database = database
        self._server: object | None = None

    def start(self) -> str:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI): harmless.
            warnings.simplefilter("ignore")
            import pgserver

        self.data_dir.mkdir(parents=True, exist_ok=True)
        server = pgserver.get_server(  # type: ignore[attr-defined]
            str(self.data_dir), cleanup_mode="stop"
        )
        self._server = server
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}';")
        if "(1 row)" not in exists:
            server.psql(f'CREATE DATABASE "{self.database}";')
        log.info("embedded_postgres_started", data_dir=str(self.data_dir))
        return self.dsn_for(self.database)

    def dsn_for(self, database: str) -> str:
        socket_dir = quote(str(self.data_dir), safe="")
        return f"postgresql://postgres@/{database}?host={socket_dir}"

    def stop(self) -> None:
        server = self._server
        self._server = None
        if server is not None:
            server.cleanup()  # type: ignore[attr-defined]
            log.info("embedded_postgres_stopped", data_dir=str(self.data_dir))
