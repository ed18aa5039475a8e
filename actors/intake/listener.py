"""LISTEN for coin_metrics inserts on a dedicated connection and wake the poller.

The notification is only a wake-up; the poller reads the table. The service
being replaced lost events whenever its listener connection died and never
noticed. Here a periodic self-NOTIFY must come back within a timeout, or the
connection is declared dead, closed, and replaced (with backoff) by a fresh
one; after every (re)connect the poller is told to catch up, which covers
whatever happened while nobody was listening.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import asyncpg
import structlog
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

from actors.runtime import metrics
from actors.runtime.messages import Wakeup
from actors.runtime.state import ServiceState
from storage.config import Settings

log = structlog.get_logger(__name__)

CHANNEL = "coin_metrics_insert"

Connect = Callable[[str], Awaitable[asyncpg.Connection]]


class ListenerDead(Exception):
    """The LISTEN connection stopped answering (probe timeout or termination)."""


def wake(wakeups: MemoryObjectSendStream[Wakeup], reason: str) -> None:
    """Ask the poller to read; a wake-up already waiting covers this one too."""
    with contextlib.suppress(anyio.WouldBlock):
        wakeups.send_nowait(Wakeup(reason))


class Listener:
    def __init__(
        self,
        dsn: str,
        wakeups: MemoryObjectSendStream[Wakeup],
        state: ServiceState,
        *,
        probe_interval: float,
        probe_timeout: float,
        backoff_initial: float = 0.1,
        backoff_max: float = 10.0,
        connect: Connect | None = None,
    ) -> None:
        self._dsn = dsn
        self._wakeups = wakeups
        self._state = state
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._connect: Connect = connect or (lambda dsn: asyncpg.connect(dsn))
        # A channel of our own per process: probes of two instances never mix.
        self._probe_channel = f"pump_predictor_probe_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.backend_pid: int | None = None  # for tests that kill the connection
        self.connections = 0

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        dsn: str,
        wakeups: MemoryObjectSendStream[Wakeup],
        state: ServiceState,
    ) -> Listener:
        return cls(
            dsn,
            wakeups,
            state,
            probe_interval=settings.listener_probe_interval_seconds,
            probe_timeout=settings.listener_probe_timeout_seconds,
        )

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        started = False
        backoff = self._backoff_initial
        try:
            while True:
                try:
                    conn = await self._connect(self._dsn)
                except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                    log.warning("listener_connect_failed", error=str(exc), retry_in_s=backoff)
                else:
                    try:
                        await self._session(conn, None if started else task_status)
                    except ListenerDead as exc:
                        log.warning("listener_dead", reason=str(exc))
                    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                        log.warning("listener_connection_error", error=repr(exc))
                    finally:
                        # _session reported readiness once it was listening.
                        started = started or self.connections > 0
                        self._set_up(False)
                        await self._close(conn)
                    metrics.LISTENER_RECONNECTS.inc({})
                    backoff = self._backoff_initial
                if not started:
                    # Polling covers intake while there is no listener; do not block start-up.
                    started = True
                    task_status.started()
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, self._backoff_max)
        finally:
            self._set_up(False)

    async def _session(
        self, conn: asyncpg.Connection, task_status: TaskStatus[None] | None
    ) -> None:
        lost = anyio.Event()
        probe_back = anyio.Event()
        token = ""

        def on_insert(_c: Any, _pid: int, _channel: str, payload: str) -> None:
            now = time.time()
            self._state.last_notification_at = now
            metrics.NOTIFICATIONS.inc({})
            if _malformed(payload):
                log.debug("notification_payload_unexpected", payload=payload[:200])
            wake(self._wakeups, "notify")

        def on_probe(_c: Any, _pid: int, _channel: str, payload: str) -> None:
            if payload == token:
                probe_back.set()

        conn.add_termination_listener(lambda _c: lost.set())
        await conn.add_listener(CHANNEL, on_insert)
        await conn.add_listener(self._probe_channel, on_probe)
        self.backend_pid = conn.get_server_pid()
        self.connections += 1
        self._set_up(True)
        log.info("listener_connected", backend_pid=self.backend_pid, connection=self.connections)
        # Rows inserted while nobody listened: the poller reads them now.
        wake(self._wakeups, "reconnect" if self.connections > 1 else "startup")
        if task_status is not None:
            task_status.started()
        while True:
            with anyio.move_on_after(self._probe_interval):
                await lost.wait()
            if lost.is_set():
                raise ListenerDead("connection terminated")
            token = uuid.uuid4().hex
            probe_back = anyio.Event()
            with anyio.move_on_after(self._probe_timeout) as scope:
                await conn.execute("SELECT pg_notify($1, $2)", self._probe_channel, token)
                await probe_back.wait()
            if scope.cancelled_caught:
                raise ListenerDead(f"probe not answered within {self._probe_timeout}s")
            await self._report_queue_usage(conn)

    async def _report_queue_usage(self, conn: asyncpg.Connection) -> None:
        usage = await conn.fetchval("SELECT pg_notification_queue_usage()")
        metrics.NOTIFICATION_QUEUE_USAGE.set({}, float(usage))
        if self._state.last_notification_at is not None:
            metrics.LISTENER_NOTIFICATION_AGE.set(
                {}, time.time() - self._state.last_notification_at
            )

    def _set_up(self, up: bool) -> None:
        self._state.listener_up = up
        metrics.LISTENER_UP.set({}, 1.0 if up else 0.0)

    @staticmethod
    async def _close(conn: asyncpg.Connection) -> None:
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(1.0):
                try:
                    await conn.close()
                    return
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    pass
            conn.terminate()


def _malformed(payload: str) -> bool:
    try:
        data = json.loads(payload)
    except ValueError:
        return True
    return not (isinstance(data, dict) and isinstance(data.get("max_id"), int))
