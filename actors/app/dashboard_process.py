"""The Streamlit dashboard as a child process, kept alive by an actor.

The dashboard is a separate program (Streamlit owns its own server and event
loop) that reaches the service only through the REST API, so it runs as a
child process: `streamlit run web/dashboard/app.py` with `API_BASE_URL` in its
environment. It never gets `API_TOKEN`: with a token configured it is told to
ask each browser session for the token and acts with what that user typed, so
reaching the dashboard gives no more than reaching the API. If it dies it is
started again with backoff; on shutdown it is terminated, then killed after a
deadline, and never left behind (also when the actor itself is cancelled).

The child runs in its own session so that a Ctrl-C in the operator's terminal
reaches only the service, which then stops the dashboard in order, instead of
the dashboard dying first and being "restarted" during shutdown.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import anyio
import structlog
from anyio.abc import Process, TaskStatus

from storage.config import Settings

ACTOR_NAME = "dashboard"
APP_PATH = Path(__file__).resolve().parents[2] / "web" / "dashboard" / "app.py"
REPO_ROOT = APP_PATH.parent.parent.parent


# Set in the child's environment when the API wants a token: the dashboard then asks
# for it before it shows anything (web/dashboard/login.py).
REQUIRE_TOKEN_ENV = "DASHBOARD_REQUIRE_TOKEN"


def streamlit_command(port: int, *, address: str | None = None) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_PATH),
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        # No network at run time, and nothing about the operator leaves the machine.
        "--browser.gatherUsageStats",
        "false",
        # Users see the app, not Streamlit's developer menu and "Deploy" button.
        "--client.toolbarMode",
        "minimal",
        # Red means a failed prediction here (web/dashboard/visual.py), so the widgets'
        # own accent colour is a neutral blue instead of Streamlit's red.
        "--theme.primaryColor",
        "#1565c0",
    ]
    if address:
        command += ["--server.address", address]
    return command


class DashboardProcess:
    """Runs the dashboard; `request_stop()` ends it (terminate, then kill)."""

    def __init__(
        self,
        *,
        port: int,
        api_base_url: str,
        require_token: bool = False,
        address: str | None = "127.0.0.1",
        stop_deadline: float = 5.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        healthy_after: float = 30.0,
        probe_interval: float = 0.2,
    ) -> None:
        self.port = port
        self.api_base_url = api_base_url
        self.require_token = require_token
        self.address = address
        self.stop_deadline = stop_deadline
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.healthy_after = healthy_after
        self.probe_interval = probe_interval
        self.restarts = 0  # child restarts by this actor (operators and tests look at it)
        self.pid: int | None = None  # of the running child, None between runs
        self._stop = anyio.Event()
        self._ready = anyio.Event()
        self._log = structlog.get_logger(__name__).bind(actor=ACTOR_NAME, port=port)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, api_base_url: str | None = None
    ) -> DashboardProcess:
        """`api_base_url` overrides the configured one (e.g. the API's bound port)."""
        return cls(
            port=settings.streamlit_port,
            api_base_url=api_base_url or settings.api_base_url,
            require_token=bool(settings.api_token),
            address=settings.streamlit_host,
            stop_deadline=min(5.0, settings.shutdown_deadline_seconds),
        )

    @property
    def url(self) -> str:
        host = self.address if self.address not in (None, "", "0.0.0.0", "::") else "127.0.0.1"
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def request_stop(self) -> None:
        self._stop.set()

    async def wait_ready(self) -> None:
        """Until the current child answers Streamlit's health probe."""
        await self._ready.wait()

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["API_BASE_URL"] = self.api_base_url
        # The operator's token stays with the service, also when it came from the environment.
        env.pop("API_TOKEN", None)
        env[REQUIRE_TOKEN_ENV] = "true" if self.require_token else "false"
        # Streamlit would otherwise ask for an e-mail address on a first run.
        env.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")
        return env

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        backoff = self.backoff_initial
        started_reported = False
        while not self._stop.is_set():
            began = time.monotonic()
            process = await anyio.open_process(
                streamlit_command(self.port, address=self.address),
                env=self._environment(),
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=None,
                stderr=None,
                start_new_session=True,
            )
            self.pid = process.pid
            self._log.info("dashboard_started", pid=process.pid, api=self.api_base_url)
            if not started_reported:
                # Ready as soon as the child exists: the service must not wait for
                # Streamlit's start-up, which takes seconds.
                started_reported = True
                task_status.started()
            try:
                code = await self._supervise(process)
            finally:
                with anyio.CancelScope(shield=True):
                    await self._end(process)
                self.pid = None
                self._ready = anyio.Event()
            if self._stop.is_set():
                break
            if time.monotonic() - began > self.healthy_after:
                backoff = self.backoff_initial
            self.restarts += 1
            self._log.warning("dashboard_exited", exit_code=code, restart_in_s=backoff)
            with anyio.move_on_after(backoff):
                await self._stop.wait()
            backoff = min(backoff * 2, self.backoff_max)
        self._log.info("dashboard_stopped")

    async def _supervise(self, process: Process) -> int:
        """Wait until the child exits or a stop is requested; returns the exit code."""
        async with anyio.create_task_group() as tg:

            async def stop_on_request() -> None:
                await self._stop.wait()
                await self._end(process)

            tg.start_soon(stop_on_request)
            tg.start_soon(self._probe, process)
            code = await process.wait()
            tg.cancel_scope.cancel()
        return code

    async def _probe(self, process: Process) -> None:
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while process.returncode is None:
                try:
                    async with http.get(f"{self.url}/_stcore/health") as response:
                        if response.status == 200:
                            self._log.info("dashboard_ready", url=self.url)
                            self._ready.set()
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await anyio.sleep(self.probe_interval)

    async def _end(self, process: Process) -> None:
        """Terminate; kill when it has not exited within the deadline."""
        if process.returncode is not None:
            return
        try:
            process.terminate()
        except ProcessLookupError:
            return
        with anyio.move_on_after(self.stop_deadline):
            await process.wait()
            return
        self._log.warning("dashboard_killed", deadline_s=self.stop_deadline)
        try:
            process.kill()
        except ProcessLookupError:
            return
        await process.wait()
