"""Which hosts a webhook may be sent to (issue #18 item 5: no SSRF).

Anyone who may change a model's alert config chooses where the service POSTs,
from inside the network it runs in. By default a target is refused when it is,
or resolves to: a link-local address (169.254.0.0/16 and fe80::/10, where
cloud metadata services answer), a metadata host name, loopback, a private or
otherwise non-global range (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7 incl.
fd00:ec2::254, ...), an unspecified or multicast address, or the service's own API.

`WEBHOOK_ALLOWED_NETWORKS` (comma-separated CIDRs) opens ranges explicitly: an
n8n on the LAN is the common case, so every refusal names that setting. The
service's own API port stays refused whatever is allowed. Loopback is allowed in
demo mode (its stand-in n8n runs on 127.0.0.1) and where a test allows it.

The check runs when a URL is configured (PATCH, on what the name resolves to
then) and again at delivery on the addresses the connection will use (a
resolver wrapped around aiohttp's), so a name that later resolves elsewhere
(DNS rebinding) is refused too.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import anyio
from aiohttp.abc import AbstractResolver, ResolveResult

from actors.errors import ActorError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SETTING = "WEBHOOK_ALLOWED_NETWORKS"

# Cloud metadata services by name (their addresses are link-local or private anyway).
METADATA_HOSTS = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.com",
        "metadata.platformequinix.com",
        "metadata.tencentyun.com",
    }
)


class TargetRefused(ActorError, OSError):
    """A webhook target the policy does not allow; the message names the setting."""

    code = "target_refused"


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """`WEBHOOK_ALLOWED_NETWORKS` as networks; ValueError naming a bad entry."""
    networks = []
    for part in text.split(","):
        entry = part.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not a network (CIDR like 192.168.1.0/24)") from None
    return tuple(networks)


def _category(ip: IPAddress) -> str | None:
    """Why an address is refused by default (None: a global address, allowed)."""
    if ip.is_unspecified:
        return "unspecified (reaches this host)"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local (cloud metadata)"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private or not ip.is_global:
        return "private"
    return None


_LITERAL_CACHE = 1024  # URLs remembered by `TargetPolicy.literal_refusal`


@dataclass(frozen=True, slots=True)
class TargetPolicy:
    allowed_networks: tuple[IPNetwork, ...] = ()
    allow_loopback: bool = False
    own_port: int | None = None  # the API's port: never a target on this host
    own_addresses: frozenset[IPAddress] = field(default_factory=frozenset)
    # `literal_refusal` by URL: asked before every POST, of a handful of URLs.
    _literal: dict[str, str | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def refusal(self, ip: IPAddress, port: int | None = None) -> str | None:
        """Why `ip` (at `port`) may not be a target, or None when it may."""
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if (
            port is not None
            and port == self.own_port
            and (ip.is_loopback or ip.is_unspecified or ip in self.own_addresses)
        ):
            return f"{ip} port {port} is this service's own API"
        if any(ip in network for network in self.allowed_networks):
            return None
        category = _category(ip)
        if category is None or (category == "loopback" and self.allow_loopback):
            return None
        return (
            f"{ip} is a {category} address; webhook targets there are refused unless"
            f" {SETTING} allows its network (e.g. {SETTING}={_example(ip)})"
        )

    def host_refusal(self, host: str) -> str | None:
        """Refusal by name alone (metadata hosts), before any resolution."""
        name = host.lower().rstrip(".")
        if name in METADATA_HOSTS:
            return f"{name} is a cloud metadata host; webhook targets there are refused"
        return None

    def check_addresses(self, host: str, addresses: Iterable[str], port: int | None) -> None:
        """Raise TargetRefused when the name or any address it resolves to is refused:
        one bad address is enough (a resolver may mix them to slip one through)."""
        reason = self.host_refusal(host)
        if reason is None:
            for text in addresses:
                reason = self.refusal(ipaddress.ip_address(text.split("%", 1)[0]), port)
                if reason is not None:
                    break
        if reason is not None:
            raise TargetRefused(f"webhook target {host} refused: {reason}")

    def literal_refusal(self, url: str) -> str | None:
        """For a URL whose host is a name or an IP literal: the refusal decidable
        without DNS (aiohttp connects to IP literals without asking a resolver).
        Remembered per URL: the answer depends on nothing else, and parsing the URL
        again for every POST was a few percent of the dispatcher's CPU."""
        if url in self._literal:
            return self._literal[url]
        if len(self._literal) >= _LITERAL_CACHE:
            self._literal.clear()
        reason = self._literal[url] = self._literal_refusal(url)
        return reason

    def _literal_refusal(self, url: str) -> str | None:
        try:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port
        except ValueError:
            return None  # the client refuses it as an invalid URL
        if not host:
            return None
        port = port or (443 if parts.scheme == "https" else 80)
        reason = self.host_refusal(host)
        if reason is None:
            try:
                ip = ipaddress.ip_address(host.split("%", 1)[0])
            except ValueError:
                return None
            reason = self.refusal(ip, port)
        return None if reason is None else f"webhook target {host} refused: {reason}"

    async def check_url(self, url: str, *, resolve_within: float = 5.0) -> str | None:
        """The refusal of a URL as configured now (its name resolved), or None.

        A name that does not resolve now is not refused here: delivery checks again
        on whatever it resolves to then.
        """
        reason = self.literal_refusal(url)
        if reason is not None:
            return reason
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
            return None  # a literal: checked above
        except ValueError:
            pass
        resolver = aiohttp.ThreadedResolver()
        try:
            with anyio.fail_after(resolve_within):
                results = await resolver.resolve(host, port, family=socket.AF_UNSPEC)
        except (OSError, TimeoutError):
            return None
        finally:
            await resolver.close()
        try:
            self.check_addresses(host, [r["host"] for r in results], port)
        except TargetRefused as exc:
            return str(exc)
        return None


def _example(ip: IPAddress) -> str:
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def own_addresses(api_host: str) -> frozenset[IPAddress]:
    """This host's addresses as far as cheaply known: the API's bind address and what
    the machine's name resolves to."""
    found: set[IPAddress] = set()
    candidates = [api_host]
    with contextlib.suppress(OSError):
        candidates.extend(
            str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None)
        )
    for text in candidates:
        try:
            found.add(ipaddress.ip_address(text.split("%", 1)[0]))
        except ValueError:
            continue
    return frozenset(found)


def policy_from(
    allowed_networks: str, *, api_host: str, api_port: int, demo: bool = False
) -> TargetPolicy:
    """The policy of a running service: settings plus demo mode."""
    return TargetPolicy(
        allowed_networks=parse_networks(allowed_networks),
        allow_loopback=demo,
        own_port=api_port,
        own_addresses=own_addresses(api_host),
    )


class PolicedResolver(AbstractResolver):
    """aiohttp's resolver, with every answer checked against the policy before any
    connection is made: the addresses checked are the ones connected to."""

    def __init__(self, policy: TargetPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.inner = inner or aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        self.policy.check_addresses(host, [r["host"] for r in results], port)
        return results

    async def close(self) -> None:
        await self.inner.close()


def refused_cause(exc: BaseException) -> TargetRefused | None:
    """The policy refusal inside an aiohttp connection error, if that was the cause."""
    seen: Any = exc
    for _ in range(4):
        if isinstance(seen, TargetRefused):
            return seen
        inner = getattr(seen, "os_error", None) or seen.__cause__
        if inner is None:
            return None
        seen = inner
    return None
