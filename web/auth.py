"""Bearer-token check for the API, when `API_TOKEN` is set.

A failed authentication is logged (client, method, path and why; never the value
presented, which may be a real token sent to the wrong service), answered after
a constant delay, and counted per client address: a client that fails
`api_auth_max_failures` times within `api_auth_failure_window_seconds` gets 429
until the window has passed, with the right token too, so guessing is not
cheaper from a client that also knows a valid token.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import time
from collections import deque

import anyio
import structlog
from aiohttp import web

from web.context import CONTEXT
from web.errors import ApiError, Handler

log = structlog.get_logger(__name__)

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Probes must work without credentials (container HEALTHCHECK, load balancers).
OPEN_PATHS = frozenset({"/health", "/api/health"})
# Clients remembered at once; beyond it the least recently failing is forgotten,
# so a flood of spoofed sources cannot grow memory without bound.
MAX_TRACKED_CLIENTS = 10_000


class FailedAuthentications:
    """Failure times per client within a sliding window (policy only, no I/O)."""

    def __init__(self, limit: int, window_seconds: float) -> None:
        self.limit = limit
        self.window = window_seconds
        self._failures: dict[str, deque[float]] = {}

    @property
    def tracked_clients(self) -> frozenset[str]:
        return frozenset(self._failures)

    def _recent(self, client: str, now: float) -> deque[float] | None:
        times = self._failures.get(client)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[client]
            return None
        return times

    def blocked_for(self, client: str, now: float) -> float:
        """Seconds until `client` may try again; 0 when it is not blocked."""
        if self.limit <= 0:
            return 0.0
        times = self._recent(client, now)
        if times is None or len(times) < self.limit:
            return 0.0
        return times[-self.limit] + self.window - now

    def record(self, client: str, now: float) -> None:
        if self.limit <= 0:  # no limit: nothing to remember
            return
        times = self._recent(client, now) or deque()
        self._failures.pop(client, None)  # re-inserted last: the dict is ordered by recency
        times.append(now)
        while len(times) > self.limit:
            times.popleft()
        self._failures[client] = times
        while len(self._failures) > MAX_TRACKED_CLIENTS:
            del self._failures[next(iter(self._failures))]


FAILED_AUTHENTICATIONS = web.AppKey("failed_authentications", FailedAuthentications)


async def listens_beyond_loopback(host: str) -> bool:
    """True when a server bound to `host` is reachable from other machines."""
    if host in ("", "*", "0.0.0.0", "::"):
        return True
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = await anyio.getaddrinfo(host, None)
    except OSError:
        return True  # cannot tell: warn rather than stay silent
    return not infos or any(not ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


async def warn_when_open_without_token(app: web.Application) -> None:
    """Start-up hook: an API reachable beyond this machine without a token is said loudly."""
    settings = app[CONTEXT].settings
    if not settings.api_token and await listens_beyond_loopback(settings.api_host):
        log.warning(
            "api_listens_beyond_loopback_without_token",
            host=settings.api_host,
            port=settings.api_port,
            hint="anyone who reaches this port can import, activate and delete models: "
            "set API_TOKEN, or API_HOST=127.0.0.1 when only this machine needs the API",
        )


def _client(request: web.Request) -> str:
    return request.remote or "unknown"


async def _refuse(request: web.Request, reason: str, message: str) -> ApiError:
    """Log, remember and delay a failed authentication; the error to raise."""
    settings = request.app[CONTEXT].settings
    request.app[FAILED_AUTHENTICATIONS].record(_client(request), time.monotonic())
    log.warning(
        "api_authentication_failed",
        client=_client(request),
        method=request.method,
        path=request.path,
        reason=reason,
    )
    await anyio.sleep(settings.api_auth_failure_delay_seconds)
    return ApiError("unauthorized", message, {"header": "Authorization"})


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    settings = request.app[CONTEXT].settings
    token = settings.api_token
    if not token or request.path in OPEN_PATHS:
        return await handler(request)
    header = request.headers.get("Authorization", "")
    # A presented token is always checked, also where none is needed: a client (the
    # dashboard's sign-in) can learn whether its token is right with a plain read.
    if request.method in READ_METHODS and settings.api_public_reads and not header:
        return await handler(request)
    wait = request.app[FAILED_AUTHENTICATIONS].blocked_for(_client(request), time.monotonic())
    if wait > 0:
        retry_after = max(1, math.ceil(wait))
        log.warning(
            "api_authentication_rate_limited",
            client=_client(request),
            method=request.method,
            path=request.path,
            retry_after_seconds=retry_after,
        )
        raise ApiError(
            "too_many_requests",
            f"too many failed authentications from this client; retry in {retry_after} s",
            {"header": "Authorization", "retry_after_seconds": retry_after},
            headers={"Retry-After": str(retry_after)},
        )
    scheme, _, supplied = header.partition(" ")
    if not header:
        raise await _refuse(
            request,
            "missing",
            "missing bearer token (send the Authorization header as Bearer <token>)",
        )
    if scheme.lower() != "bearer" or not supplied.strip():
        raise await _refuse(
            request,
            "not_bearer",
            "the Authorization header must be Bearer <token>",
        )
    # backslashreplace: a header may decode to lone surrogates, which must be a 401, not a 500.
    presented = supplied.strip().encode("utf-8", "backslashreplace")
    if not hmac.compare_digest(presented, token.encode()):
        raise await _refuse(request, "wrong_token", "invalid bearer token")
    return await handler(request)
