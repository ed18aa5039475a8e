"""One /metrics for a supervisor and its worker processes (`serve --workers N`).

Each worker is a full actor system with its own aioprometheus registry and serves
it on 127.0.0.1; the supervisor scrapes them when it is scraped and merges the
text expositions. We chose scrape-and-merge over prometheus_client's
multiprocess mode: every metric here is an aioprometheus collector, and the
multiprocess mode would mean another metrics library, a shared mmap directory to
clean up after crashed workers, and no live gauges.

Counters and histograms are summed per series across processes (what `rate()`
and quantiles over the service want). Gauges are not summable in general (a
cursor id, an "up" flag), so each worker's gauge series gets a `worker` label;
the supervisor's own series keep theirs unlabeled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

SUMMED_TYPES = frozenset({"counter", "histogram", "summary"})


@dataclass(slots=True)
class _Family:
    help: str = ""
    kind: str = "untyped"
    samples: dict[str, float] = field(default_factory=dict)


def _with_label(series: str, name: str, value: str) -> str:
    label = f'{name}="{value}"'
    head, brace, rest = series.partition("{")
    if not brace:
        return f"{series}{{{label}}}"
    return f"{head}{{{label},{rest}"


def _parse_into(families: dict[str, _Family], text: str, worker: str | None) -> None:
    current: _Family | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            _, keyword, rest = line.split(" ", 2)
            name, _, info = rest.partition(" ")
            current = families.setdefault(name, _Family())
            if keyword == "HELP":
                current.help = current.help or info
            else:
                current.kind = info.strip()
            continue
        if line.startswith("#"):
            continue
        series, _, raw = line.rpartition(" ")
        try:
            value = float(raw)
        except ValueError:
            continue
        if current is None:
            current = families.setdefault(series.split("{", 1)[0], _Family())
        if worker is not None and current.kind not in SUMMED_TYPES:
            series = _with_label(series, "worker", worker)
        current.samples[series] = current.samples.get(series, 0.0) + value


def merge_expositions(own: str, workers: Sequence[tuple[str, str]]) -> str:
    """`own` (this process) and each (worker label, exposition) as one exposition."""
    families: dict[str, _Family] = {}
    _parse_into(families, own, None)
    for label, text in workers:
        _parse_into(families, text, label)
    lines: list[str] = []
    for name, family in families.items():
        if family.help:
            lines.append(f"# HELP {name} {family.help}")
        lines.append(f"# TYPE {name} {family.kind}")
        lines.extend(f"{series} {_number(value)}" for series, value in family.samples.items())
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
