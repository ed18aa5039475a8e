"""Overview: the newest alerts, what the service did over the last 24 hours, the models.

Charts first (alerts, predictions per minute, alerts per hour, the delay from a
trade to its prediction, each model's live success rate beside its training
accuracy), then the models with their switches. Every empty state says what to
do next instead of drawing an empty chart.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import altair as alt
import pandas as pd
import streamlit as st

from web.dashboard import common, visual
from web.dashboard.api_client import ApiClient

WINDOWS = {"1 h": 1, "6 h": 6, "24 h": 24}
FEED_SIZE = 10


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
        # shadow: predicted, stored and evaluated, never sent to webhooks
        "mode": model.get("mode", common.MISSING),
        "predictions": common.number(predictions),
        "last prediction": common.when(last),
        "live success rate": common.percent(live_rate),
        "training accuracy": common.percent(accuracy),
        "webhook": webhook.get("status", common.MISSING),
    }


def _service_block(health: dict[str, Any], stats: dict[str, Any]) -> None:
    status = health.get("status", "unknown")
    if status != "healthy":
        reasons = "; ".join(health.get("reasons") or []) or "no reason given"
        st.warning(f"Service {status}: {reasons}")
    checks = health.get("checks") or {}
    lag = stats.get("intake_lag_seconds", checks.get("intake_lag_seconds"))
    cols = st.columns(6)
    cols[0].metric("Service", "healthy" if status == "healthy" else str(status))
    cols[1].metric("Intake lag", common.MISSING if lag is None else f"{lag:.1f} s")
    cols[2].metric("Active models", common.number(stats.get("active_models")))
    cols[3].metric("Predictions (1 h)", common.number(stats.get("predictions_last_hour")))
    cols[4].metric("Pending evaluation", common.number(stats.get("predictions_pending")))
    cols[5].metric("Webhooks dead", common.number(stats.get("outbox_dead")))
    down = checks.get("actors_down") or []
    if down:
        st.warning(f"Actors down: {', '.join(down)}")


def chart_link(prediction: dict[str, Any]) -> str:
    """The Predictions page opened on this prediction's coin chart."""
    query = {
        "page": "Predictions",
        "coin": prediction.get("coin_id") or "",
        "prediction": prediction.get("id") or "",
    }
    return "?" + urlencode(query)


def _age(value: Any) -> str:
    parsed = common.parse_time(value)
    if parsed is None:
        return common.MISSING
    seconds = max(0.0, (datetime.now(UTC) - parsed).total_seconds())
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def _alert_feed(api: ApiClient, names: dict[int | None, str]) -> None:
    st.subheader("Newest alerts")
    page = common.attempt(api.predictions, tag="alert", limit=FEED_SIZE)
    if page is None:
        return
    _, rows = page
    if not rows:
        st.info(
            "No alert yet. An alert is a prediction at or above its model's alert "
            "threshold; lower the threshold on Manage model to see more of them."
        )
        return
    frame = pd.DataFrame(
        [
            {
                "outcome": [row.get("evaluation_result") or "pending"],
                "probability": row.get("probability"),
                "coin": visual.short_coin(row.get("coin_id")),
                "model": common.prediction_model(row, names),
                "age": _age(row.get("data_timestamp")),
                "change": row.get("actual_change_pct"),
                "chart": chart_link(row),
            }
            for row in rows
        ]
    )
    frame["change"] = pd.to_numeric(frame["change"], errors="coerce").astype("float64")
    st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        placeholder=common.MISSING,
        key="alert_feed",
        column_config={
            "outcome": visual.outcome_chips(),
            "probability": st.column_config.ProgressColumn(
                "probability", min_value=0.0, max_value=1.0, format="%.2f"
            ),
            "change": st.column_config.NumberColumn("actual change", format="%+.1f %%"),
            "chart": st.column_config.LinkColumn("coin chart", display_text="open chart"),
        },
    )


def timeline_frame(body: dict[str, Any], names: dict[int | None, str]) -> pd.DataFrame:
    columns = [
        "start",
        "model",
        "predictions",
        "alerts",
        "success",
        "failed",
        "delay_p50_seconds",
        "delay_max_seconds",
    ]
    records = [
        {**b, "model": names.get(b.get("active_model_id"), f"#{b.get('active_model_id')}")}
        for b in body.get("bins") or []
        if isinstance(b, dict)
    ]
    frame = pd.DataFrame.from_records(records, columns=columns)
    frame["start"] = pd.to_datetime(frame["start"], utc=True, errors="coerce")
    return frame


def _activity_charts(
    frame: pd.DataFrame,
    body: dict[str, Any],
    models: list[str],
    training: dict[str, float],
    hours: int,
) -> None:
    seconds = int(body.get("bin_seconds") or 900)
    size = timedelta(seconds=seconds)
    span = timedelta(hours=hours)
    start = pd.to_datetime(body.get("from"), utc=True)
    end = pd.to_datetime(body.get("to"), utc=True)
    domain = [start.isoformat(), end.isoformat()]
    frame = frame.assign(end=frame["start"] + size)
    per_minute = frame.assign(rate=frame["predictions"] / (seconds / 60))
    per_hour = frame.assign(rate=frame["alerts"] * 3600 / seconds)
    x = visual.utc_x("start", "time", span, domain)
    tooltip_time = visual.utc_tooltip("start", "bin start")
    left, right = st.columns(2)
    with left:
        st.markdown(f"**Predictions per minute** · last {hours} h, {visual.bin_label(size)} bins")
        st.altair_chart(
            alt.Chart(per_minute)
            .mark_bar()
            .encode(
                x=x,
                x2="end:T",
                y=alt.Y("sum(rate):Q", title="predictions / min"),
                color=alt.Color(
                    "model:N",
                    scale=visual.model_scale(models),
                    legend=alt.Legend(orient="bottom", title=None),
                ),
                tooltip=[tooltip_time, "model:N", alt.Tooltip("rate:Q", format=".1f")],
            ),
            width="stretch",
        )
    with right:
        st.markdown(f"**Alerts per hour** · last {hours} h, {visual.bin_label(size)} bins")
        st.altair_chart(
            alt.Chart(per_hour)
            .mark_bar(color=visual.ALERT)
            .encode(
                x=x,
                x2="end:T",
                y=alt.Y("sum(rate):Q", title="alerts / h"),
                tooltip=[tooltip_time, "model:N", alt.Tooltip("rate:Q", format=".1f")],
            ),
            width="stretch",
        )
    left, right = st.columns(2)
    with left:
        st.markdown("**Delay from trade to prediction** (intake lag + scoring)")
        delay = (
            frame.groupby("start", as_index=False)
            .agg(median=("delay_p50_seconds", "median"), worst=("delay_max_seconds", "max"))
            .melt(id_vars="start", var_name="delay", value_name="seconds")
            .dropna()
        )
        st.altair_chart(
            alt.Chart(delay)
            .mark_line(point=True)
            .encode(
                x=x,
                y=alt.Y("seconds:Q", title="seconds"),
                color=alt.Color(
                    "delay:N",
                    scale=alt.Scale(domain=["median", "worst"], range=["#1565c0", visual.GREY]),
                    legend=alt.Legend(orient="bottom", title=None),
                ),
                tooltip=[tooltip_time, "delay:N", alt.Tooltip("seconds:Q", format=".1f")],
            ),
            width="stretch",
        )
    with right:
        _success_chart(frame, x, tooltip_time, models, training)


def _success_chart(
    frame: pd.DataFrame, x: alt.X, tooltip_time: Any, models: list[str], training: dict[str, float]
) -> None:
    st.markdown("**Live success rate** (line) beside **training accuracy** (dashed)")
    judged = frame[(frame["success"] + frame["failed"]) > 0].assign(
        rate=lambda f: f["success"] / (f["success"] + f["failed"])
    )
    if judged.empty:
        st.info(
            "No prediction in this window is evaluated yet. A prediction is judged "
            "once its target window has passed (the model's minutes ahead)."
        )
        return
    rules = pd.DataFrame(
        [{"model": name, "accuracy": value} for name, value in training.items() if name in models]
    )
    color = alt.Color(
        "model:N", scale=visual.model_scale(models), legend=alt.Legend(orient="bottom", title=None)
    )
    line = (
        alt.Chart(judged)
        .mark_line(point=True)
        .encode(
            x=x,
            y=alt.Y(
                "rate:Q",
                title="success rate",
                axis=alt.Axis(format="%"),
                scale=alt.Scale(domain=[0, 1]),
            ),
            color=color,
            tooltip=[
                tooltip_time,
                "model:N",
                alt.Tooltip("rate:Q", format=".0%"),
                "success:Q",
                "failed:Q",
            ],
        )
    )
    layers: list[Any] = [line]
    if not rules.empty:
        layers.append(
            alt.Chart(rules)
            .mark_rule(strokeDash=[6, 4])
            .encode(y="accuracy:Q", color=color, tooltip=["model:N", "accuracy:Q"])
        )
    st.altair_chart(alt.layer(*layers), width="stretch")


def _toggle(api: ApiClient, model: dict[str, Any]) -> None:
    ident = common.model_id(model)
    action = "deactivate" if model.get("is_active", True) else "activate"
    with st.spinner(f"{action.capitalize()} model {ident} ..."):
        done = common.attempt(api.post, f"/api/models/{ident}/{action}")
    if done is not None:
        common.rerun_with(f"Model {common.model_label(model)}: {action}d.")


def _models(api: ApiClient, models: list[dict[str, Any]]) -> None:
    st.subheader("Models")
    rows = [_model_row(api, model) for model in models]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    for model in models:
        ident = common.model_id(model)
        active = bool(model.get("is_active", True))
        left, right = st.columns([4, 1])
        left.write(f"{common.model_label(model)} · {model.get('model_type', '')}")
        if right.button("Deactivate" if active else "Activate", key=f"toggle_{ident}"):
            _toggle(api, model)


def render(api: ApiClient, health: dict[str, Any]) -> None:
    st.header("Overview")
    common.flash()
    stats = common.need(api.stats)
    _service_block(health, stats)
    losses = common.attempt(api.get, "/api/webhooks/losses")
    common.webhook_losses(api, losses, key="retry_all_jobs", scope={})
    models = common.need(api.models, include_inactive=True)
    if not models:
        st.info(
            "No model imported yet. Import one on the **Import model** page (the "
            "Training Service lists its READY models there), or start with `--demo` "
            "to see the whole pipeline on generated data."
        )
        return
    names: dict[int | None, str] = {common.model_id(m): common.model_name(m) for m in models}
    training = {
        common.model_name(m): accuracy
        for m in models
        if (accuracy := common.training_metric(m, "accuracy")) is not None
    }
    _alert_feed(api, names)
    st.subheader("Activity")
    window = st.radio("Window", list(WINDOWS), index=2, horizontal=True, key="overview_window")
    hours = WINDOWS.get(window or "24 h", 24)
    body = common.attempt(api.timeline, hours)
    if body is not None:
        frame = timeline_frame(body, names)
        if frame.empty:
            st.info(
                f"No prediction in the last {hours} h. Predictions start when new "
                "`coin_metrics` rows arrive: check the intake lag above and the collector."
            )
        else:
            _activity_charts(frame, body, sorted(set(names.values())), training, hours)
    _models(api, models)
