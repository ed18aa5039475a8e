"""`pump-predictor` command line: serve, migrate (later: replay, demo, dashboard)."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

import anyio
import structlog

from actors.logs import configure_logging
from storage.config import ConfigError, Settings, load_settings

log = structlog.get_logger(__name__)


async def _serve(settings: Settings, *, dashboard: bool, demo: bool) -> None:
    from actors.service import Service, ServiceOptions

    service = Service(settings, ServiceOptions(dashboard=dashboard, demo=demo))

    async def watch_signals() -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("signal_received", signal=signal.Signals(signum).name)
                await service.shutdown()
                return

    async with anyio.create_task_group() as tg:
        await tg.start(service.run)
        log.info(
            "service_ready",
            api=f"http://127.0.0.1:{service.web_port}/api",
            metrics=f"http://127.0.0.1:{service.web_port}/metrics",
            health=f"http://127.0.0.1:{service.web_port}/health",
            embedded_database=settings.embedded,
        )
        tg.start_soon(watch_signals)
        # The service returns after shutdown; then stop watching signals.
        await _wait_finished(service)
        tg.cancel_scope.cancel()


async def _wait_finished(service: object) -> None:
    from actors.service import Service

    assert isinstance(service, Service)
    await service.supervisor._finished.wait()


async def _migrate(settings: Settings) -> None:
    from storage.database import migrate, open_database

    database = await open_database(settings)
    try:
        applied = await migrate(database.dsn, embedded=settings.embedded)
        print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none'}")
    finally:
        await database.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pump-predictor", description=__doc__)
    parser.add_argument("--config", help="path of config.toml (default: the repository's)")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the service (API, actors, dashboard)")
    serve.add_argument(
        "--no-dashboard", action="store_true", help="do not start the Streamlit dashboard"
    )
    serve.add_argument("--demo", action="store_true", help="run the demo collector and models")
    sub.add_parser("migrate", help="apply database migrations and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "serve":
        anyio.run(lambda: _serve(settings, dashboard=not args.no_dashboard, demo=args.demo))
    elif args.command == "migrate":
        anyio.run(_migrate, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
