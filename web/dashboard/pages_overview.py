"""Overview: is the service healthy, is intake keeping up, what are the models doing."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from web.dashboard import common
from web.dashboard.api_client import ApiClient


def _model_row(api: ApiClient, model: dict[str, Any]) -> dict[str, Any]:
    """One line of the models table: the model, then its live numbers from
    `/api/models/{id}/statistics` (`success_rate` counts success / (success + failed))."""
    ident = common.model_id(model)
    stats = common.quietly(api.get, f"/api/models/{ident}/statistics") or {}
    webhook = common.quietly(api.get, f"/api/models/{ident}/n8n-status") or {}
    predictions = common.first(
        common.dig(model, "predictions", "summary.predictions", "statistics.predictions"),
        common.dig(stats, "total"),
    )
    last = common.first(
        common.dig(model, "last_prediction_at", "summary.last_prediction_at"),
        common.dig(stats, "last_prediction_at", "last_data_timestamp"),
    )
    live_rate = common.first(
        common.dig(model, "live_success_rate", "summary.live_success_rate"),
        common.dig(stats, "success_rate"),
    )
    accuracy = common.first(
        common.training_metric(model, "accuracy"),
        common.dig(stats, "comparison.accuracy.training"),
    )
    return {
        "id": ident,
        "name": common.model_name(model),
        "type": model.get("model_type", common.MISSING),
        "active": bool(model.get("is_active", True)),
        "predictions": common.number(predictions),
        "last prediction": common.when(last),
        "live success rate": common.percent(live_rate),
        "training accuracy": common.percent(accuracy),
        "webhook": webhook.get("status", common.MISSING),
    }


def _service_block(health: dict[str, Any], stats: dict[str, Any]) -> None:
    status = health.get("status", "unknown")
    if status == "healthy":
        st.success("Service healthy")
    else:
        reasons = "; ".join(health.get("reasons") or []) or "no reason given"
        st.warning(f"Service {status}: {reasons}")
    checks = health.get("checks") or {}
    lag = stats.get("intake_lag_seconds", checks.get("intake_lag_seconds"))
    cols = st.columns(5)
    cols[0].metric("Database", str(checks.get("database", common.MISSING)))
    cols[1].metric("Listener", str(checks.get("listener", common.MISSING)))
    cols[2].metric("Intake lag", common.MISSING if lag is None else f"{lag:.1f} s")
    cols[3].metric("Active models", common.number(stats.get("active_models")))
    cols[4].metric("Predictions (1 h)", common.number(stats.get("predictions_last_hour")))
    cols = st.columns(5)
    cols[0].metric("Predictions total", common.number(stats.get("predictions_total")))
    cols[1].metric("Pending evaluation", common.number(stats.get("predictions_pending")))
    cols[2].metric("Webhooks pending", common.number(stats.get("outbox_pending")))
    cols[3].metric("Webhooks dead", common.number(stats.get("outbox_dead")))
    cols[4].metric("Version", str(stats.get("version", health.get("version", common.MISSING))))
    st.caption(f"Last prediction: {common.when(stats.get('last_prediction_at'))}")
    down = checks.get("actors_down") or []
    if down:
        st.warning(f"Actors down: {', '.join(down)}")


def _toggle(api: ApiClient, model: dict[str, Any]) -> None:
    ident = common.model_id(model)
    action = "deactivate" if model.get("is_active", True) else "activate"
    with st.spinner(f"{action.capitalize()} model {ident} ..."):
        done = common.attempt(api.post, f"/api/models/{ident}/{action}")
    if done is not None:
        common.rerun_with(f"Model {common.model_label(model)}: {action}d.")


def render(api: ApiClient, health: dict[str, Any]) -> None:
    st.header("Overview")
    common.flash()
    stats = common.need(api.stats)
    _service_block(health, stats)

    st.subheader("Models")
    models = common.need(api.models, include_inactive=True)
    if not models:
        st.info("No model imported yet. Import one on the Import model page.")
        return
    rows = [_model_row(api, model) for model in models]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    for model in models:
        ident = common.model_id(model)
        active = bool(model.get("is_active", True))
        left, right = st.columns([4, 1])
        left.write(f"{common.model_label(model)} · {model.get('model_type', '')}")
        if right.button("Deactivate" if active else "Activate", key=f"toggle_{ident}"):
            _toggle(api, model)
