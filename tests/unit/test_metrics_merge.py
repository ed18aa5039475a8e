"""Worker metrics merged into the supervisor's /metrics (`serve --workers N`)."""

from __future__ import annotations

from aioprometheus.collectors import Counter, Gauge, Histogram, Registry
from aioprometheus.renderer import render

from web.metrics_merge import merge_expositions


def exposition(ticks: float, held: float, lag: float) -> str:
    registry = Registry()
    Counter("pp_ticks_received_total", "Ticks.", registry=registry).add({}, ticks)
    Gauge("pp_shards_held", "Held.", registry=registry).set({}, held)
    Histogram("pp_lag_seconds", "Lag.", registry=registry, buckets=(1.0,)).observe(
        {"model": "3"}, lag
    )
    body, _ = render(registry, [])
    return bytes(body).decode()


def samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            out[series] = float(value)
    return out


def test_counters_and_histograms_are_summed_and_gauges_kept_per_worker() -> None:
    merged = merge_expositions(
        exposition(0, 0, 0.5),
        [("1", exposition(10, 32, 0.5)), ("2", exposition(5, 32, 2.0))],
    )
    got = samples(merged)
    assert got["pp_ticks_received_total"] == 15
    assert got['pp_shards_held{worker="1"}'] == 32
    assert got['pp_shards_held{worker="2"}'] == 32
    assert got["pp_shards_held"] == 0  # the supervisor's own series, unlabeled
    assert got['pp_lag_seconds_count{model="3"}'] == 3
    assert got['pp_lag_seconds_bucket{le="1.0",model="3"}'] == 2
    assert got['pp_lag_seconds_sum{model="3"}'] == 3.0
    assert merged.count("# TYPE pp_shards_held gauge") == 1


def test_a_worker_that_did_not_answer_leaves_the_others_intact() -> None:
    own = exposition(1, 0, 0.1)
    assert samples(merge_expositions(own, [])) == samples(own)
