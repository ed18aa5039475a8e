"""Webhook target policy (issue #18 item 5): which addresses a webhook may reach."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from actors.webhooks.targets import PolicedResolver, TargetPolicy, TargetRefused, parse_networks

DEFAULT = TargetPolicy(own_port=8000)


@pytest.mark.parametrize(
    ("address", "category"),
    [
        ("169.254.169.254", "link-local"),  # AWS/GCP/Azure metadata
        ("fe80::1", "link-local"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.10", "private"),
        ("fd00:ec2::254", "private"),  # AWS metadata over IPv6 (fc00::/7)
        ("fc00::1", "private"),
        ("100.64.0.1", "private"),  # carrier-grade NAT: not global
        ("0.0.0.0", "unspecified"),
        ("::ffff:169.254.169.254", "link-local"),  # IPv4-mapped is judged as IPv4
        ("224.0.0.1", "multicast"),
    ],
)
def test_non_global_addresses_are_refused_by_default_naming_the_setting(
    address: str, category: str
) -> None:
    reason = DEFAULT.refusal(ipaddress.ip_address(address), 443)
    assert reason is not None and category in reason
    assert "WEBHOOK_ALLOWED_NETWORKS" in reason


@pytest.mark.parametrize("address", ["8.8.8.8", "172.32.0.1", "2606:4700:4700::1111"])
def test_global_addresses_are_allowed(address: str) -> None:
    assert DEFAULT.refusal(ipaddress.ip_address(address), 443) is None


def test_allowed_networks_open_exactly_their_ranges() -> None:
    lan = TargetPolicy(allowed_networks=parse_networks("192.168.1.0/24, fd12::/16"))
    assert lan.refusal(ipaddress.ip_address("192.168.1.77"), 5678) is None
    assert lan.refusal(ipaddress.ip_address("fd12::5"), 5678) is None
    assert lan.refusal(ipaddress.ip_address("192.168.2.1"), 5678) is not None
    assert lan.refusal(ipaddress.ip_address("169.254.169.254"), 80) is not None
    with pytest.raises(ValueError, match="not a network"):
        parse_networks("192.168.1.0/24,lan")


def test_loopback_is_allowed_only_when_asked_and_never_the_services_own_api() -> None:
    demo = TargetPolicy(allow_loopback=True, own_port=8000)
    assert demo.refusal(ipaddress.ip_address("127.0.0.1"), 5678) is None
    reason = demo.refusal(ipaddress.ip_address("127.0.0.1"), 8000)
    assert reason is not None and "own API" in reason
    opened = TargetPolicy(allowed_networks=parse_networks("127.0.0.0/8"), own_port=8000)
    assert opened.refusal(ipaddress.ip_address("127.0.0.1"), 8000) is not None
    public = TargetPolicy(
        own_port=8000, own_addresses=frozenset({ipaddress.ip_address("203.0.113.9")})
    )
    assert public.refusal(ipaddress.ip_address("203.0.113.9"), 8000) is not None


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://METADATA.GOOGLE.INTERNAL./x",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://10.0.0.1:5678/webhook/x",
        "http://[::ffff:7f00:1]:5678/x",
    ],
)
def test_urls_decidable_without_dns_are_refused_before_any_connection(url: str) -> None:
    reason = DEFAULT.literal_refusal(url)
    assert reason is not None and "refused" in reason


def test_a_host_name_is_left_to_the_resolver() -> None:
    assert DEFAULT.literal_refusal("https://n8n.example.com/webhook/x") is None


class _RebindingDns(AbstractResolver):
    """A DNS answer as an attacker's name server gives it (public, then internal)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0)
            for a in self.answers.pop(0)
        ]

    async def close(self) -> None:
        return None


async def test_the_resolver_refuses_a_name_that_now_points_inside() -> None:
    resolver = PolicedResolver(DEFAULT, _RebindingDns(["93.184.215.14"], ["169.254.169.254"]))
    assert [r["host"] for r in await resolver.resolve("hooks.example", 443)] == ["93.184.215.14"]
    with pytest.raises(TargetRefused, match="WEBHOOK_ALLOWED_NETWORKS"):
        await resolver.resolve("hooks.example", 443)


async def test_one_internal_address_among_public_ones_refuses_the_name() -> None:
    resolver = PolicedResolver(DEFAULT, _RebindingDns(["93.184.215.14", "10.0.0.7"]))
    with pytest.raises(TargetRefused, match=r"10\.0\.0\.7"):
        await resolver.resolve("hooks.example", 443)
