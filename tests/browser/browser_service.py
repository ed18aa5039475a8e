"""The running service a browser test talks to, and its settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anyio.from_thread import BlockingPortal
from ports import free_port

from actors.app.service import Service
from storage.config import Settings, load_settings


@dataclass(slots=True)
class RunningDemo:
    service: Service
    portal: BlockingPortal
    api_url: str
    dashboard_url: str

    def call(self, fn: Any, *args: Any) -> Any:
        """Run an async function on the service's event loop."""
        return self.portal.call(fn, *args)


def browser_settings(database_dsn: str, tmp: Path, **overrides: Any) -> Settings:
    return load_settings(env={}).replace(
        db_dsn=database_dsn,
        api_host="127.0.0.1",
        api_port=free_port(),
        streamlit_port=free_port(),
        model_storage_path=str(tmp / "models"),
        polling_interval_seconds=0.2,
        batch_timeout_seconds=0.02,
        shutdown_deadline_seconds=5.0,
        log_level="WARNING",
        **overrides,
    )
