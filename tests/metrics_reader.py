"""Read the Prometheus text of `/metrics` and find samples in it by name and labels."""

from __future__ import annotations

import re

import aiohttp

# Greedy braces: label values may hold braces themselves (route="/api/models/{id}").
_SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][\w:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
# aioprometheus does not escape quotes in values: a value ends at `",next="` or the end.
_LABEL = re.compile(r'(\w+)="(.*?)"(?:,(?=\w+=")|$)')


async def metrics_text(target: str | aiohttp.ClientSession) -> str:
    """GET /metrics of a base URL ("http://127.0.0.1:PORT") or of a session made with one."""
    if isinstance(target, str):
        async with aiohttp.ClientSession(target) as http:
            return await metrics_text(http)
    async with target.get("/metrics") as response:
        assert response.status == 200, await response.text()
        return await response.text()


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of metric `name` in a /metrics text: (labels, value)."""
    found = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match["name"] != name:
            continue
        labels = dict(_LABEL.findall(match["labels"] or ""))
        found.append((labels, float(match["value"])))
    return found


def sample_value(text: str, name: str, **labels: str) -> float:
    """The sum of `name`'s samples that carry all the given labels (0.0 when there is none).
    The registry lives as long as the process, so tests compare before with after."""
    return sum(
        value
        for have, value in samples(text, name)
        if all(have.get(key) == wanted for key, wanted in labels.items())
    )
