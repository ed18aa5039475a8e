"""`serve --workers N`: N worker processes under this (supervisor) process.

Each worker is `pump-predictor worker`: a full actor system on its own event loop
(intake of the shards it leases, batcher, predictors, webhook dispatch), with its
API on an internal 127.0.0.1 port that only this process reads (/metrics).
The supervisor keeps the public API, /metrics (the workers' merged in,
`web.metrics_merge`), the status page, the dashboard, the evaluator and retention.
A worker that exits is started again with backoff; while it is gone the others
take its shards when its leases expire (SHARD_LEASE_SECONDS), and hand them back
once it holds its fair share again. Stopping sends SIGTERM to every worker: each
drains, releases its shards and exits.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Mapping

import aiohttp
import anyio
import structlog
from anyio.abc import Process, TaskStatus

from actors.runtime import metrics

log = structlog.get_logger(__name__)

# A worker that ran this long before exiting starts again after the shortest delay.
HEALTHY_AFTER_SECONDS = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WorkerPool:
    def __init__(
        self,
        count: int,
        env: Mapping[str, str],
        *,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        stop_deadline: float = 10.0,
    ) -> None:
        self.count = count
        self._env = dict(env)
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._stop_deadline = stop_deadline
        self._stopping = False
        self.processes: dict[int, Process] = {}
        self.ports: dict[int, int] = {}
        self.down_since: dict[int, float] = {i: time.monotonic() for i in range(count)}
        self.restarts = 0

    def request_stop(self) -> None:
        self._stopping = True
        for process in self.processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            async with anyio.create_task_group() as tg:
                for index in range(self.count):
                    tg.start_soon(self._keep, index)
                task_status.started()
        finally:
            # Past the stop deadline (or cancelled): no worker outlives the supervisor.
            for process in self.processes.values():
                if process.returncode is None:
                    process.kill()

    async def _keep(self, index: int) -> None:
        backoff = self._backoff_initial
        while not self._stopping:
            port = _free_port()
            env = {
                **os.environ,
                **self._env,
                "API_HOST": "127.0.0.1",
                "API_PORT": str(port),
                "WORKER_INDEX": str(index),
            }
            began = time.monotonic()
            process = await anyio.open_process(
                [sys.executable, "-m", "actors.app.cli", "worker"],
                env=env,
                stdin=None,
                stdout=None,
                stderr=None,
                # Its own process group: a terminal's Ctrl-C reaches the supervisor only,
                # which stops the workers once (a second signal would cancel their drain).
                start_new_session=True,
            )
            self.processes[index], self.ports[index] = process, port
            self.down_since.pop(index, None)
            log.info("worker_started", worker=index, pid=process.pid, port=port)
            metrics.WORKERS_UP.set({}, float(self.running))
            code = await process.wait()
            self.down_since[index] = time.monotonic()
            metrics.WORKERS_UP.set({}, float(self.running))
            if self._stopping:
                log.info("worker_stopped", worker=index, code=code)
                return
            self.restarts += 1
            metrics.WORKER_RESTARTS.inc({"worker": str(index)})
            if time.monotonic() - began > HEALTHY_AFTER_SECONDS:
                backoff = self._backoff_initial
            log.warning("worker_exited", worker=index, code=code, restart_in_s=backoff)
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, self._backoff_max)

    @property
    def running(self) -> int:
        return sum(1 for p in self.processes.values() if p.returncode is None)

    async def scrape(self) -> list[tuple[str, str]]:
        """Each running worker's /metrics text, by worker index; a worker that does not
        answer within a second is left out of this scrape (its series reappear)."""
        found: list[tuple[str, str]] = []
        timeout = aiohttp.ClientTimeout(total=1.0)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            for index, port in sorted(self.ports.items()):
                process = self.processes.get(index)
                if process is None or process.returncode is not None:
                    continue
                try:
                    async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                        if resp.status == 200:
                            found.append((str(index), await resp.text()))
                except (aiohttp.ClientError, TimeoutError):
                    continue
        return found
