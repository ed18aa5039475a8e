"""Start-up refusals: failures a restart cannot fix, said in one line.

A wrong `DB_DSN` or a taken port is an operator's mistake, not a crash: the
service exits at once with one line that names the setting and the cause
(`API_PORT 8000: address already in use`) instead of a traceback or a restart
loop. The traceback is only worth printing at `LOG_LEVEL=DEBUG`.
"""

from __future__ import annotations

import errno
import socket
from urllib.parse import urlsplit

import asyncpg

from storage.errors import StorageError

__all__ = ["StartupRefused", "check_port_free", "database_refusal", "find_refusal"]


class StartupRefused(StorageError):
    """The service cannot start with this configuration on this machine."""

    code = "startup_refused"

    def __init__(self, setting: str, cause: str) -> None:
        super().__init__(f"{setting}: {cause}")
        self.setting = setting
        self.cause = cause


def find_refusal(exc: BaseException) -> StartupRefused | None:
    """The refusal inside `exc`, also when task groups wrapped it in exception groups."""
    if isinstance(exc, StartupRefused):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = find_refusal(inner)
            if found is not None:
                return found
    return None


def _dsn_target(dsn: str) -> tuple[str, str]:
    """(host, port) of a DSN for messages; never the user or password."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or ""
        port = str(parts.port or 5432)
    except ValueError:
        return "", ""
    if not host:
        for item in parts.query.split("&"):
            key, _, value = item.partition("=")
            if key == "host":
                host = value
    return host or "localhost", port


def database_refusal(dsn: str, exc: BaseException) -> StartupRefused | None:
    """Classify the first connection's failure; None when a retry might help."""
    host, port = _dsn_target(dsn)
    if isinstance(exc, asyncpg.ClientConfigurationError | ValueError):
        return StartupRefused("DB_DSN", str(exc) if "DSN" in str(exc) else f"invalid DSN: {exc}")
    if isinstance(exc, socket.gaierror):
        return StartupRefused("DB_DSN", f'host "{host}" not found')
    if isinstance(exc, ConnectionRefusedError) or (
        isinstance(exc, OSError) and "Connect call failed" in str(exc)
    ):
        return StartupRefused("DB_DSN", f"connection refused at {host}:{port}")
    if isinstance(exc, FileNotFoundError):
        return StartupRefused("DB_DSN", f"no PostgreSQL socket in {host}")
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return StartupRefused("DB_DSN", f"authentication failed at {host}:{port}: {exc}")
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return StartupRefused("DB_DSN", f"{exc} at {host}:{port}")
    return None


def check_port_free(setting: str, host: str, port: int) -> None:
    """Bind and release `host:port` the way the server will, or refuse naming `setting`.

    SO_REUSEADDR as aiohttp sets it: a port held only by TIME_WAIT connections of
    a previous run is free, a listening socket on any address is not.
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror:
        host_setting = setting.replace("PORT", "HOST")
        raise StartupRefused(host_setting, f"{host!r} is not an address") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupRefused(f"{setting} {port}", "address already in use") from None
            if exc.errno == errno.EACCES:
                raise StartupRefused(f"{setting} {port}", "permission denied") from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise StartupRefused(
                    setting.replace("PORT", "HOST"), f"{host} is not an address of this machine"
                ) from None
            raise
