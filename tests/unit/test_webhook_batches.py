"""How claimed jobs become POSTs: per coin tick by default, batches when opted in."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from actors.webhooks.dispatcher import (
    batch_body,
    delivery_groups,
    group_key_header,
    handoff_batches,
)
from storage.outbox.jobs import ClaimedJob, OutboxJob

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _job(
    job_id: int,
    coin: str,
    seconds: int = 0,
    *,
    url: str = "https://n8n.example/hook",
    attempts: int = 0,
    batch_key: str | None = None,
    model: int = 1,
) -> ClaimedJob:
    at = T0 + timedelta(seconds=seconds)
    item = json.dumps({"probability": 0.9, "model": {"active_model_id": model}})
    return ClaimedJob(
        id=job_id,
        idempotency_key=f"key-{job_id}",
        target_url=url,
        coin_id=coin,
        data_timestamp=at,
        active_model_ids=(model,),
        model_ids=(model,),
        timestamp=at.isoformat(),
        items_json=item,
        item_count=1,
        alerts_count=1,
        version="test",
        attempts=attempts,
        created_at=T0,
        locked_until=T0,
        batch_key=batch_key,
    )


def test_without_batching_each_url_and_tick_is_one_post() -> None:
    jobs = [_job(1, "A"), _job(2, "A", model=2), _job(3, "B"), _job(4, "A", url="https://x/h")]
    groups = delivery_groups(jobs, 1)
    assert sorted([j.id for j in g.jobs] for g in groups) == [[1, 2], [3], [4]]
    assert all(g.batch_key is None for g in groups)


def test_batches_hold_at_most_n_ticks_of_one_url_and_attempt_number() -> None:
    jobs = [_job(i, f"C{i}") for i in range(1, 6)]
    jobs += [_job(6, "C6", attempts=2), _job(7, "C7", url="https://x/h")]
    groups = delivery_groups(jobs, 2)
    assert sorted([j.id for j in g.jobs] for g in groups) == [[1, 2], [3, 4], [5], [6], [7]]
    for group in groups:
        assert group.new_batch
        assert group.batch_key == group_key_header([j.idempotency_key for j in group.jobs])


def test_jobs_of_an_earlier_batch_stay_together_whatever_the_setting() -> None:
    jobs = [_job(1, "A", batch_key="b1"), _job(2, "B", batch_key="b1"), _job(3, "C")]
    for setting in (1, 10):
        groups = delivery_groups(jobs, setting)
        fixed = [g for g in groups if g.batch_key == "b1"]
        assert [[j.id for j in g.jobs] for g in fixed] == [[1, 2]]
        assert not fixed[0].new_batch
        assert any([j.id for j in g.jobs] == [3] for g in groups)


def test_a_batch_body_is_an_array_of_tick_bodies_in_tick_order() -> None:
    jobs = [_job(1, "B", 1), _job(2, "A", 1), _job(3, "A", 0), _job(4, "A", 1, model=2)]
    body = json.loads(batch_body(jobs, sent_at="2026-01-01T12:00:05+00:00"))
    assert [(e["coin_id"], e["timestamp"]) for e in body] == [
        ("A", T0.isoformat()),
        ("A", (T0 + timedelta(seconds=1)).isoformat()),
        ("B", (T0 + timedelta(seconds=1)).isoformat()),
    ]
    assert [len(e["predictions"]) for e in body] == [1, 2, 1]
    assert body[1]["metadata"]["total_predictions"] == 2
    assert {e["metadata"]["sent_at"] for e in body} == {"2026-01-01T12:00:05+00:00"}


def _queued(key: str, url: str = "https://n8n.example/hook") -> OutboxJob:
    return OutboxJob(key, url, f"coin-{key}", T0, (1,), (1,), "{}")


def test_handed_over_jobs_are_batched_per_url_in_queueing_order_and_only_when_leased() -> None:
    jobs = [_queued(f"k{i}") for i in range(5)] + [_queued("x0", "https://x/h")]
    leased = [True, True, False, True, True, True]
    keys = handoff_batches(jobs, leased, 2)
    assert keys[2] is None  # not leased: a claim batches it
    assert keys[0] == keys[1] == group_key_header(["k0", "k1"])
    assert keys[3] == keys[4] == group_key_header(["k3", "k4"])
    assert keys[5] == "x0"  # alone for its URL: its own key, as a claim would make it
    assert handoff_batches(jobs, leased, 1) == [None] * len(jobs)
