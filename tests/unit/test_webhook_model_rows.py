"""An `active_models` row becomes the model a webhook reports, field by field, and a
stored job's items name exactly the model snapshots the dispatcher must load."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from webhook_receiver import model_reference_form

from actors.webhooks.payload import (
    ReportedPrediction,
    WebhookModel,
    build_payload,
    column_items,
    compact_model_json,
    compact_snapshot_json,
    expand_snapshots,
    iso_timestamp,
    model_snapshot,
    payload_json,
    prediction_item_json,
    snapshot_keys,
    snapshot_model,
    snapshot_reference,
    tag_for,
    tick_jobs,
    webhook_items,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

# Every field a distinct, non-default value: a field read from the wrong column, dropped
# to None or replaced by a constant shows up as a difference.
ROW: dict[str, Any] = {
    "id": 3,
    "model_id": 12,
    "name": "rf-2026",
    "custom_name": "My RF",
    "model_type": "random_forest",
    "target_variable": "market_cap_close",
    "target_operator": ">=",
    "target_value": 12.5,
    "future_minutes": 10,
    "price_change_percent": 5.0,
    "target_direction": "down",
    "features": ["price_close", "volume_sol", "price_roc_5"],
    "phases": [2, 3],
    "alert_threshold": 0.8,
    "n8n_webhook_url": "http://n8n.example/webhook/x",
    "n8n_enabled": True,
    "n8n_send_modes": ["alerts_only", "positive_only"],
    "mode": "live",
}


def test_every_field_of_an_active_models_row_reaches_the_model() -> None:
    assert WebhookModel.from_row(ROW) == WebhookModel(
        active_model_id=3,
        model_id=12,
        name="My RF",
        model_type="random_forest",
        target_variable="market_cap_close",
        target_operator=">=",
        target_value=12.5,
        future_minutes=10,
        price_change_percent=5.0,
        target_direction="down",
        features=("price_close", "volume_sol", "price_roc_5"),
        phases=(2, 3),
        alert_threshold=0.8,
        n8n_webhook_url="http://n8n.example/webhook/x",
        n8n_enabled=True,
        n8n_send_modes=("alerts_only", "positive_only"),
    )


def test_what_the_row_may_leave_empty_or_give_in_another_type() -> None:
    model = WebhookModel.from_row(
        {
            **ROW,
            "custom_name": None,  # no custom name: the model's own name
            "phases": None,  # every phase
            "target_operator": None,
            "target_value": None,
            "n8n_webhook_url": None,
            "alert_threshold": Decimal("0.65"),  # numeric columns may come as Decimal
        }
    )
    assert (model.name, model.phases, model.target_operator, model.target_value) == (
        "rf-2026",
        None,
        None,
        None,
    )
    assert model.n8n_webhook_url is None
    assert model.alert_threshold == 0.65 and type(model.alert_threshold) is float
    assert WebhookModel.from_row({**ROW, "phases": ["1", 4]}).phases == (1, 4)


@pytest.mark.parametrize(
    ("enabled", "mode", "sends"),
    [
        (True, "live", True),
        (True, None, True),  # a row from before shadow mode has no mode column
        (True, "shadow", False),  # a shadow model is never sent, whatever its switch says
        (False, "live", False),
        (False, "shadow", False),
    ],
)
def test_only_an_enabled_live_model_sends(enabled: bool, mode: str | None, sends: bool) -> None:
    row = {**ROW, "n8n_enabled": enabled}
    if mode is None:
        del row["mode"]
    else:
        row["mode"] = mode
    assert WebhookModel.from_row(row).n8n_enabled is sends


KEY_A, KEY_B = "a" * 64, "0123456789abcdef" * 4


def test_snapshot_keys_reads_our_references_and_postgresql_jsonb_text() -> None:
    ours = (
        f'[{{"model":{snapshot_reference(KEY_A)},"p":1}},{{"model":{snapshot_reference(KEY_B)}}}]'
    )
    # jsonb's text output puts a space after ':' and ','.
    jsonb = (
        f'[{{"model": {{"snapshot": "{KEY_A}"}}, "p": 1}}, {{"model": {{"snapshot": "{KEY_A}"}}}}]'
    )
    assert snapshot_keys(ours) == {KEY_A, KEY_B}
    assert snapshot_keys(jsonb) == {KEY_A}  # a key referred to twice is loaded once
    assert snapshot_keys('[{"model":{"id":1,"name":"inline"}}]') == set()
    assert snapshot_keys("[]") == set()


@pytest.mark.parametrize(
    "text",
    [
        '{"snapshot":"' + "a" * 63 + '"}',  # too short
        '{"snapshot":"' + "a" * 65 + '"}',  # too long
        '{"snapshot":"' + "A" * 64 + '"}',  # SHA-256 hex digests are lower case
        '{"snapshot":"' + "g" * 64 + '"}',  # not hex
        '{"snapshot":"' + "a" * 64 + '","x":1}',  # not a reference alone
        '{"name":"' + "a" * 64 + '"}',  # another key
    ],
)
def test_text_that_is_not_a_reference_names_no_snapshot(text: str) -> None:
    assert snapshot_keys(text) == set()


def test_a_jobs_items_name_exactly_the_snapshots_it_carries() -> None:
    """The dispatcher loads the snapshots `snapshot_keys` names before expanding a job;
    for a job made by tick_jobs that is every model of the job and nothing else."""
    models = [
        WebhookModel.from_row({**ROW, "id": 3, "model_id": 12}),
        WebhookModel.from_row({**ROW, "id": 4, "model_id": 13, "custom_name": "Other"}),
    ]
    items = [
        item
        for model in models
        for item in webhook_items(
            model,
            [ReportedPrediction("CoinA", T0, 1, 0.9, tag_for(0.9, 0.8), 0.8)],
            default_url=None,
        )
    ]
    (job,) = tick_jobs(items)
    payload = json.loads(job.payload)
    items_json = json.dumps(payload["predictions"])
    carried = {s.key: s.json for s in job.snapshots}
    assert snapshot_keys(items_json) == set(carried) == {item.snapshot.key for item in items}
    expanded = json.loads(expand_snapshots(items_json, carried))
    assert [p["model"]["name"] for p in expanded] == ["My RF", "Other"]


def test_the_envelope_counts_alerts_and_carries_sent_at_only_when_given() -> None:
    model = WebhookModel.from_row(ROW)
    items = [
        (model, ReportedPrediction(coin, T0, int(p >= 0.5), p, tag_for(p, 0.8), 0.8))
        for coin, p in (("A", 0.9), ("A", 0.95), ("A", 0.6))
    ]
    payload = build_payload("A", T0, items, "1.2.3")
    assert payload["metadata"]["alerts_count"] == 2
    assert payload["metadata"]["total_predictions"] == 3
    assert "sent_at" not in payload["metadata"]
    sent = payload_json("A", "t", "", total_predictions=0, alerts_count=0, version="1", sent_at="s")
    assert json.loads(sent)["metadata"]["sent_at"] == "s"


def test_a_tick_jobs_predictions_are_ordered_by_active_model_whatever_the_input_order() -> None:
    models = [WebhookModel.from_row({**ROW, "id": i, "model_id": 10 + i}) for i in (9, 2, 5)]
    items = [
        item
        for model in models
        for item in webhook_items(
            model, [ReportedPrediction("A", T0, 1, 0.9, "alert", 0.8)], default_url=None
        )
    ]
    (job,) = tick_jobs(items)
    assert job.active_model_ids == (2, 5, 9)
    expanded = expand_snapshots(
        json.dumps(json.loads(job.payload)["predictions"]), {s.key: s.json for s in job.snapshots}
    )
    assert [p["model"]["active_model_id"] for p in json.loads(expanded)] == [2, 5, 9]


def test_the_compact_model_object_keeps_who_and_what_without_features_or_phases() -> None:
    model = WebhookModel.from_row(ROW)
    full = json.loads(model_snapshot(model).json)
    compact = json.loads(compact_model_json(model_snapshot(model).json))
    assert compact == {k: v for k, v in full.items() if k not in ("features", "phases")}
    assert list(compact) == [k for k in full if k not in ("features", "phases")]


@pytest.mark.parametrize("probability", [0.05, 0.55, 0.93])
def test_a_stored_item_expands_to_exactly_the_item_as_sent(probability: float) -> None:
    """Stored, an item is its prediction, probability and a tail key; expanded, it is
    byte for byte the item CONTRACTS.md section 4 sends (`prediction_item_json`), from the
    batcher's columns and from stored predictions alike; a job stored before item tails
    (its model as a reference) expands to the same text."""
    model = WebhookModel.from_row({**ROW, "n8n_send_modes": ["all"]})
    tag = tag_for(probability, model.alert_threshold)
    p = ReportedPrediction("CoinA", T0, int(probability >= 0.5), probability, tag, 0.8)
    sent = prediction_item_json(model, p)
    (stored,) = webhook_items(model, [p], default_url=None)
    (column,) = column_items(
        model,
        [("CoinA", T0, iso_timestamp(T0))],
        [p.prediction],
        [probability],
        [tag],
        default_url=None,
    )
    assert column.item_json == stored.item_json and column.snapshot == stored.snapshot
    assert '"model"' not in stored.item_json and len(stored.item_json) < 100
    assert stored.snapshot.key in stored.item_json
    assert expand_snapshots(stored.item_json, {stored.snapshot.key: stored.snapshot.json}) == sent
    (job,) = tick_jobs([stored])
    old = model_reference_form(job)
    (snapshot,) = old.snapshots
    assert snapshot == model_snapshot(model)
    assert old.items_json == sent.replace(snapshot.json, snapshot_reference(snapshot.key))
    assert snapshot_keys(old.items_json) == {snapshot.key}
    assert expand_snapshots(old.items_json, {snapshot.key: snapshot.json}) == sent


def test_a_tail_expands_wherever_jsonb_puts_it() -> None:
    """jsonb's text output orders keys by length (the tail first) and adds spaces."""
    model = WebhookModel.from_row(ROW)
    p = ReportedPrediction("CoinA", T0, 1, 0.9, tag_for(0.9, 0.8), 0.8)
    (item,) = webhook_items(model, [p], default_url=None)
    stored = json.loads(item.item_json)
    reordered = json.dumps({"tail": stored["tail"], **stored})
    assert reordered.startswith('{"tail": ')
    expanded = expand_snapshots(reordered, {item.snapshot.key: item.snapshot.json})
    assert json.loads(expanded) == json.loads(prediction_item_json(model, p))


@pytest.mark.parametrize(
    "text",
    [
        '{"p":1,"tail":"' + "a" * 31 + '"}',  # too short
        '{"p":1,"tail":"' + "a" * 33 + '"}',  # too long
        '{"p":1,"tail":"' + "A" * 32 + '"}',  # upper case
        '{"p":1,"tails":"' + "a" * 32 + '"}',  # another key
        '{"p":"\\"tail\\":\\"' + "a" * 32 + '\\""}',  # inside a string
    ],
)
def test_text_that_is_not_a_tail_reference_names_no_snapshot(text: str) -> None:
    json.loads(text)  # each is valid JSON
    assert snapshot_keys(text) == set()
    assert expand_snapshots(text, {}) == text


def test_a_tail_in_compact_form_holds_the_compact_model() -> None:
    model = WebhookModel.from_row(ROW)
    p = ReportedPrediction("CoinA", T0, 1, 0.9, tag_for(0.9, 0.8), 0.8)
    (item,) = webhook_items(model, [p], default_url=None)
    tail = item.snapshot
    compact = json.loads(compact_snapshot_json(tail.key, tail.json))
    assert compact == {
        **json.loads(tail.json),
        "model": json.loads(compact_model_json(model_snapshot(model).json)),
    }
    assert snapshot_model(tail.key, tail.json) == json.loads(model_snapshot(model).json)
    full = model_snapshot(model)
    assert compact_snapshot_json(full.key, full.json) == compact_model_json(full.json)
