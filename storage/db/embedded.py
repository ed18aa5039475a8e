"""Embedded PostgreSQL for the default (no DB_DSN) mode.

`pgserver` ships the server binaries inside its wheel, so a newcomer needs
nothing but Python. The server is shared by processes using the same data
directory and stopped when the last of them exits: pgserver keeps the PIDs of
the processes using it in `.handle_pids.json`. A process that died without
cleaning up (kill -9, power loss) leaves its PID there, and from then on no
process is "the last" and the server is never stopped; `start` therefore
removes the records of dead processes first and says whether it adopted a
server such a process left running.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from urllib.parse import quote

import structlog

log = structlog.get_logger(__name__)

DATABASE_NAME = "pump_predictor"
HANDLE_PIDS_FILE = ".handle_pids.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _postmaster_pid(data_dir: Path) -> int | None:
    """PID of a server running on `data_dir`, from postmaster.pid (None: none runs)."""
    try:
        first = (data_dir / "postmaster.pid").read_text().split("\n", 1)[0].strip()
        pid = int(first)
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


def remove_stale_handles(data_dir: Path) -> list[int]:
    """Drop the PIDs of dead processes from pgserver's handle list; returns them."""
    path = data_dir / HANDLE_PIDS_FILE
    try:
        recorded = [int(p) for p in json.loads(path.read_text())]
    except (OSError, ValueError, TypeError):
        return []
    stale = [pid for pid in recorded if pid != os.getpid() and not _pid_alive(pid)]
    if stale:
        path.write_text(json.dumps([pid for pid in recorded if pid not in stale]))
    return stale


class EmbeddedPostgres:
    """A started embedded server; `dsn` points at our database inside it."""

    def __init__(self, data_dir: str | Path, database: str = DATABASE_NAME) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.database = database
        self._server: object | None = None

    @property
    def started(self) -> bool:
        return self._server is not None

    def start(self) -> str:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI): harmless.
            warnings.simplefilter("ignore")
            import pgserver
            from pgserver.postgres_server import PostgresServer

        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Under pgserver's own inter-process lock, so no live process registers meanwhile.
        with PostgresServer._lock:
            stale = remove_stale_handles(self.data_dir)
            running = _postmaster_pid(self.data_dir)
        if stale:
            if running is not None:
                log.warning(
                    "embedded_postgres_adopted",
                    reason="left running by a process that did not stop it",
                    postmaster_pid=running,
                    stale_pids=stale,
                    data_dir=str(self.data_dir),
                )
            else:
                log.warning(
                    "embedded_postgres_stale_records_removed",
                    stale_pids=stale,
                    data_dir=str(self.data_dir),
                )
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
            still_running = _postmaster_pid(self.data_dir)
            if still_running is None:
                log.info("embedded_postgres_stopped", data_dir=str(self.data_dir))
            else:
                # Another live process still uses it; the last one stops it.
                log.info(
                    "embedded_postgres_left_running",
                    reason="still used by another process",
                    data_dir=str(self.data_dir),
                )
