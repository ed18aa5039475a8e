"""`pump-predictor` command line: serve, migrate, replay, demo (later: dashboard)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from actors.runtime import event_loop
from actors.runtime.logs import configure_logging
from storage.config import (
    CONFIG_ENV,
    ConfigError,
    Settings,
    environment_warnings,
    load_settings,
)
from storage.refusals import (
    StartupRefused,
    check_port_free,
    database_refusal,
    find_refusal,
)

log = structlog.get_logger(__name__)

# Exit codes: 2 = the configuration is refused, 3 = start-up refused on this machine
# (a taken port, an unreachable DB_DSN): restarting does not help, fixing a setting does.
EXIT_CONFIG = 2
EXIT_REFUSED = 3


def resolve_workers(requested: int) -> int:
    """WORKERS / --workers: 0 means one per core this process may run on."""
    if requested > 0:
        return requested
    return (
        max(len(os.sched_getaffinity(0)), 1)
        if hasattr(os, "sched_getaffinity")
        else (os.cpu_count() or 1)
    )


async def _serve(
    settings: Settings,
    *,
    dashboard: bool,
    demo: bool,
    role: str = "all",
    workers: int = 1,
) -> None:
    """Run until SIGINT/SIGTERM; a signal at any moment stops what has started.

    The signal receiver is installed before anything starts: a stop during the
    embedded server's start, migrations or model loading stops the actors already
    running in stage order, then the pool and the database (reverse order of
    start), within SHUTDOWN_DEADLINE_SECONDS. A second signal cancels at once;
    the database is still closed (shielded) so PostgreSQL is never orphaned.
    """
    # Refuse a taken port before starting (or even importing) anything.
    check_port_free("API_PORT", settings.api_host, settings.api_port)
    if dashboard:
        check_port_free("STREAMLIT_PORT", _dashboard_host(settings), settings.streamlit_port)
    from actors.app.service import Service, ServiceOptions

    service = Service(
        settings, ServiceOptions(dashboard=dashboard, demo=demo, role=role, workers=workers)
    )
    finished = anyio.Event()
    stopping = False

    async def run_service(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            await service.run(task_status=task_status)
        finally:
            finished.set()

    async def stop_within_deadline(cancel: anyio.CancelScope) -> None:
        with anyio.move_on_after(settings.shutdown_deadline_seconds + 5):
            await service.shutdown()
            await finished.wait()
        cancel.cancel()

    async def watch_signals(
        tg: TaskGroup, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        nonlocal stopping
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()
            async for signum in signals:
                name = signal.Signals(signum).name
                if stopping:
                    log.warning("signal_received_again", signal=name, action="cancel now")
                    tg.cancel_scope.cancel()
                    return
                stopping = True
                log.info("signal_received", signal=name)
                tg.start_soon(stop_within_deadline, tg.cancel_scope)

    async def watch_parent(tg: TaskGroup) -> None:
        """A worker whose supervisor died (kill -9) stops too, releasing its shards."""
        nonlocal stopping
        parent = os.getppid()
        while os.getppid() == parent:  # noqa: ASYNC110 - no event tells of a parent's death
            await anyio.sleep(1.0)
        if not stopping:
            stopping = True
            log.warning("supervisor_gone", action="stop")
            tg.start_soon(stop_within_deadline, tg.cancel_scope)

    async with anyio.create_task_group() as tg:
        await tg.start(watch_signals, tg)
        if role == "worker":
            tg.start_soon(watch_parent, tg)
        await tg.start(run_service)
        if role == "worker":
            log.info("worker_ready", metrics=f"http://127.0.0.1:{service.web_port}/metrics")
        elif not stopping and not finished.is_set():
            log.info(
                "service_ready",
                api=f"http://127.0.0.1:{service.web_port}/api",
                metrics=f"http://127.0.0.1:{service.web_port}/metrics",
                health=f"http://127.0.0.1:{service.web_port}/health",
                embedded_database=settings.embedded,
                demo=demo,
            )
            if settings.log_format != "json":  # service_ready says the same, as JSON
                _print_banner(settings, service.web_port, dashboard=dashboard, demo=demo)
        await finished.wait()
        tg.cancel_scope.cancel()


async def _dashboard(settings: Settings) -> None:
    from actors.app.dashboard_process import DashboardProcess

    dashboard = DashboardProcess.from_settings(settings)
    print(f"dashboard on {dashboard.url} (API: {settings.api_base_url})", flush=True)
    async with anyio.create_task_group() as tg:
        tg.start_soon(dashboard.run)
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                dashboard.request_stop()
                break


def _dashboard_host(settings: Settings) -> str:
    """Where Streamlit will listen (all interfaces when STREAMLIT_HOST is empty)."""
    return settings.streamlit_host or "0.0.0.0"


def _reachable(host: str) -> str:
    """A listening host as a browser on this machine reaches it."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def _print_banner(settings: Settings, port: int | None, *, dashboard: bool, demo: bool) -> None:
    """Where things are, for the person who just ran ./scripts/run."""
    host = _reachable(settings.api_host)
    lines = [
        "",
        "pump-predictor is running"
        + (" with DEMO data (synthetic coins and models)" if demo else ""),
        f"  status page  http://{host}:{port}/",
        f"  REST API     http://{host}:{port}/api/docs  (interactive; /api/openapi.json)",
        f"  metrics      http://{host}:{port}/metrics",
    ]
    if dashboard:
        dashboard_host = _reachable(_dashboard_host(settings))
        lines.append(f"  dashboard    http://{dashboard_host}:{settings.streamlit_port}/")
    if settings.embedded:
        lines.append(f"  database     embedded PostgreSQL in {settings.embedded_data_dir}")
    if demo:
        lines.append(
            "  Plain service: ./scripts/run --no-demo; real database: set DB_DSN (README)."
        )
    print("\n".join(lines) + "\n", flush=True)


async def _migrate(settings: Settings) -> None:
    from storage.db.database import migrate, open_database

    database = await open_database(settings)
    try:
        try:
            applied = await migrate(database.dsn, embedded=settings.embedded)
        except Exception as exc:
            refusal = database_refusal(database.dsn, exc) if settings.db_dsn else None
            if refusal is not None:
                raise refusal from exc
            raise
        print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none'}")
    finally:
        await database.close()


async def _reshard(settings: Settings, count: int) -> int:
    """Change SHARD_COUNT in the database while no process holds a shard."""
    from storage.db.database import migrate, open_database
    from storage.db.pool import connect
    from storage.intake.shard_leases import ReshardRefused, reshard

    database = await open_database(settings)
    try:
        await migrate(database.dsn, embedded=settings.embedded)
        conn = await connect(database.dsn)
        try:
            old, start = await reshard(conn, count)
        except ReshardRefused as exc:
            print(f"reshard: refused: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        finally:
            await conn.close()
    finally:
        await database.close()
    print(
        f"shards: {old} -> {count}; every shard's cursor starts at coin_metrics id {start}"
        f" (the lowest old cursor). Start the services with SHARD_COUNT={count}."
    )
    return 0


def _script(name: str) -> ModuleType:
    from actors.runtime.tools import load_script

    return load_script(name)


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    tool = _script("replay")
    try:
        speed = tool.parse_speed(args.speed)
    except argparse.ArgumentTypeError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    return int(
        anyio.run(
            lambda: tool.replay_command(
                settings,
                args.file,
                speed=speed,
                shift_to_now=args.shift_to_now,
                progress=not args.quiet,
            )
        )
    )


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    tool = _script("demo_data")
    try:
        return int(
            anyio.run(
                lambda: tool.demo_command(
                    settings,
                    n_coins=args.coins,
                    seed=args.seed,
                    allow_external_database=args.allow_external_database,
                )
            )
        )
    except KeyboardInterrupt:  # Ctrl-C is how a demo ends
        return 0


def _backtest(settings: Settings, args: argparse.Namespace) -> int:
    from actors.backtest.cli import backtest_command

    return int(anyio.run(lambda: backtest_command(settings, args)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pump-predictor", description=__doc__)
    config_help = (
        "a TOML file with the settings to change (any subset; the rest come from the"
        " shipped config.toml); default: $PUMP_PREDICTOR_CONFIG or the shipped file"
    )
    parser.add_argument("--config", help=config_help)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the service (API, actors, dashboard)")
    serve.add_argument(
        "--no-dashboard", action="store_true", help="do not start the Streamlit dashboard"
    )
    mode = serve.add_mutually_exclusive_group()
    mode.add_argument(
        "--demo",
        action="store_true",
        help="run the demo (synthetic coins, stand-in Training Service, demo models); "
        "the default on the embedded database",
    )
    mode.add_argument(
        "--no-demo", action="store_true", help="plain service, also on the embedded database"
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes, each predicting its share of the coin shards (default:"
        " WORKERS; 0 = one per core); more than 1 runs them under this process",
    )
    sub.add_parser("worker", help="one worker process (started by serve --workers N)")
    sub.add_parser("migrate", help="apply database migrations and exit")
    reshard = sub.add_parser(
        "reshard",
        help="change the number of coin shards (SHARD_COUNT) stored in the database;"
        " every replica must be stopped",
    )
    reshard.add_argument("count", type=int, help="the new shard count (1-4096)")
    sub.add_parser("dashboard", help="run only the Streamlit dashboard (talks to API_BASE_URL)")
    replay = sub.add_parser(
        "replay", help="replay recorded coin_metrics rows (.csv or .parquet) into the database"
    )
    replay.add_argument("file", help="recorded coin_metrics rows (.csv, .parquet)")
    replay.add_argument(
        "--speed",
        default="1",
        help="time scale: 1 = recorded pace, 10 = ten times faster, 0 or inf = no waiting",
    )
    replay.add_argument(
        "--shift-to-now",
        action="store_true",
        help="move all timestamps by one offset so the first row is stamped now",
    )
    replay.add_argument("--quiet", action="store_true", help="no progress line")
    demo = sub.add_parser(
        "demo", help="write SYNTHETIC coin_metrics and serve demo models (stand-in TS)"
    )
    demo.add_argument("--coins", type=int, default=20, help="live demo coins (default 20)")
    demo.add_argument("--seed", type=int, default=None, help="seed of the live market")
    demo.add_argument(
        "--allow-external-database",
        action="store_true",
        help="write demo rows even though DB_DSN is set (a scratch database only)",
    )
    from actors.backtest.cli import add_arguments as backtest_arguments

    backtest_arguments(
        sub.add_parser(
            "backtest", help="score recorded ticks with a model (not activated) and judge them"
        )
    )
    # Also after the command (./scripts/run --config F passes it after "serve").
    for command in sub.choices.values():
        command.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_level, settings.log_format)
    for warning in environment_warnings():
        log.warning("config_environment_variable_ignored", problem=warning)
    try:
        return _command(args, settings)
    except (Exception, BaseExceptionGroup) as exc:
        refusal = find_refusal(exc)
        if refusal is None:
            raise
        return _refuse(refusal, exc, settings)


def _refuse(refusal: StartupRefused, exc: BaseException, settings: Settings) -> int:
    """One line on stderr, exit 3; the whole traceback only at LOG_LEVEL=DEBUG."""
    if settings.log_format == "json":  # every line JSON, this one too
        log.error(
            "startup_refused",
            setting=refusal.setting,
            cause=refusal.cause,
            message=f"cannot start: {refusal}",
            **({"exception": "".join(traceback.format_exception(exc))} if _debug(settings) else {}),
        )
        return EXIT_REFUSED
    if _debug(settings):
        traceback.print_exception(exc, file=sys.stderr)
    print(f"pump-predictor: cannot start: {refusal}", file=sys.stderr, flush=True)
    return EXIT_REFUSED


def _debug(settings: Settings) -> bool:
    return settings.log_level.upper() == "DEBUG"


def _command(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "serve":
        # Demo data only ever goes into the embedded database unless asked for explicitly.
        demo = args.demo or (settings.embedded and not args.no_demo)
        if demo and settings.embedded:
            # The embedded database has no ingest lag to wait for: outcomes show up sooner.
            settings = settings.replace(
                evaluation_grace_seconds=min(settings.evaluation_grace_seconds, 5)
            )
        workers = resolve_workers(settings.workers if args.workers is None else args.workers)
        if demo and workers > 1:
            log.warning("workers_ignored_in_demo", workers=workers, reason="demo runs one process")
            workers = 1
        if args.config and workers > 1:
            os.environ[CONFIG_ENV] = args.config  # the workers read the same file
        anyio.run(
            lambda: _serve(
                settings,
                dashboard=not args.no_dashboard,
                demo=demo,
                role="supervisor" if workers > 1 else "all",
                workers=workers,
            ),
            backend_options=event_loop.backend_options(),
        )
    elif args.command == "worker":
        anyio.run(
            lambda: _serve(settings, dashboard=False, demo=False, role="worker"),
            backend_options=event_loop.backend_options(),
        )
    elif args.command == "dashboard":
        anyio.run(_dashboard, settings)
    elif args.command == "migrate":
        anyio.run(_migrate, settings)
    elif args.command == "reshard":
        if not 1 <= args.count <= 4096:
            print("reshard: count must be 1-4096", file=sys.stderr)
            return EXIT_CONFIG
        return int(anyio.run(_reshard, settings, args.count))
    elif args.command == "replay":
        return _replay(settings, args)
    elif args.command == "demo":
        return _demo(settings, args)
    elif args.command == "backtest":
        return _backtest(settings, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
