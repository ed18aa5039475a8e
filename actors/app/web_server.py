"""The aiohttp server as an actor: ready once the port is bound."""

from __future__ import annotations

import errno

import anyio
import structlog
from aiohttp import web
from anyio.abc import TaskStatus

from storage.refusals import StartupRefused

log = structlog.get_logger(__name__)


class WebServer:
    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.bound_port: int | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
            try:
                await site.start()
            except OSError as exc:
                # A taken port stays taken: the supervisor refuses to start instead of retrying.
                cause = (
                    "address already in use"
                    if exc.errno == errno.EADDRINUSE
                    else str(exc.strerror or exc).lower()
                )
                raise StartupRefused(f"API_PORT {self.port}", cause) from exc
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            self.bound_port = sockets[0].getsockname()[1] if sockets else self.port
            log.info("web_server_listening", host=self.host, port=self.bound_port)
            task_status.started()
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await runner.cleanup()
