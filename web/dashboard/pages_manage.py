"""Manage model: settings of one imported model.

Each form sends only the fields the operator changed: the API keeps every field
a PATCH does not name, so an untouched field can never be reset by a stale form
(the service being replaced lost settings exactly that way).
"""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from storage.models.model_settings import SEND_MODES
from web.dashboard import common, visual
from web.dashboard.api_client import ApiClient

IGNORE_FIELDS = {
    "ignore_negative_seconds": "Ignore a coin after a negative prediction (s)",
    "ignore_positive_seconds": "Ignore a coin after a positive prediction (s)",
    "ignore_alert_seconds": "Ignore a coin after an alert (s)",
}
CAP_FIELDS = {
    "max_open_negative": "Max open negative predictions per coin (0 = no cap)",
    "max_open_positive": "Max open positive predictions per coin (0 = no cap)",
    "max_open_alert": "Max open alerts per coin (0 = no cap)",
}


def changed_fields(current: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """The fields whose wanted value differs from the API's current one."""
    changes: dict[str, Any] = {}
    for name, value in wanted.items():
        old = current.get(name)
        if isinstance(value, float) and isinstance(old, int | float):
            if abs(value - float(old)) > 1e-9:
                changes[name] = value
        elif value != old:
            changes[name] = value
    return changes


def _patch(api: ApiClient, path: str, current: dict[str, Any], wanted: dict[str, Any]) -> None:
    changes = changed_fields(current, wanted)
    if not changes:
        st.info("Nothing changed.")
        return
    if common.attempt(api.patch, path, changes) is not None:
        common.rerun_with(f"Saved: {', '.join(sorted(changes))}.")


def _rename(api: ApiClient, ident: int, model: dict[str, Any]) -> None:
    with st.form(f"rename_{ident}"):
        name = st.text_input("Name", value=common.model_name(model), key=f"name_{ident}")
        if st.form_submit_button("Rename"):
            if not name.strip():
                st.error("The name must not be empty.")
            elif name.strip() == common.model_name(model):
                st.info("Nothing changed.")
            elif (
                common.attempt(api.patch, f"/api/models/{ident}/rename", {"name": name.strip()})
                is not None
            ):
                common.rerun_with(f"Renamed to {name.strip()}.")


def curve_at(curve: list[dict[str, Any]], threshold: float) -> dict[str, Any] | None:
    """The curve's row for this threshold (the highest curve threshold at or below it:
    alerts are p >= threshold, so that row's alerts include all of them)."""
    rows = [r for r in curve if float(r.get("threshold", 2.0)) <= threshold + 1e-9]
    return rows[-1] if rows else None


def _threshold_curve(api: ApiClient, ident: int, current: float) -> None:
    """Precision and recall against the alert threshold from this model's judged live
    predictions, and the lowest threshold that reached a precision the operator types:
    beside the threshold field, where the choice is made."""
    st.markdown("**Threshold from outcomes**")
    wanted = st.number_input(
        "Wanted precision",
        min_value=0.0,
        max_value=1.0,
        value=0.8,
        step=0.05,
        key=f"target_precision_{ident}",
    )
    stats = common.quietly(
        api.get, f"/api/models/{ident}/statistics", target_precision=round(float(wanted), 4)
    )
    block = stats.get("thresholds") if isinstance(stats, dict) else None
    if not isinstance(block, dict):
        st.info("No statistics for this model yet.")
        return
    judged = int(block.get("judged") or 0)
    curve = [r for r in block.get("curve") or [] if isinstance(r, dict)]
    if not judged or not curve:
        st.info("No judged prediction yet: the curve appears once outcomes are evaluated.")
        return
    lowest = block.get("lowest_threshold_for_target")
    least = block.get("min_alerts_for_recommendation")
    if lowest is None:
        st.warning(
            f"No threshold reached precision {common.percent(wanted)} with at least "
            f"{least} alerts in {judged:,} judged predictions."
        )
    else:
        st.success(
            f"Lowest threshold reaching precision {common.percent(wanted)}: "
            f"**{float(lowest):.2f}** (from {judged:,} judged predictions)."
        )
    row = curve_at(curve, current)
    if row is not None:
        st.caption(
            f"At the saved threshold {current:.2f}: precision "
            f"{common.percent(row.get('precision'))}, recall {common.percent(row.get('recall'))}, "
            f"{common.number(row.get('alerts'))} alerts."
        )
    frame = pd.DataFrame(curve).melt(
        id_vars=["threshold", "alerts"], value_vars=["precision", "recall"], var_name="measure"
    )
    lines = (
        alt.Chart(frame)
        .mark_line()
        .encode(
            x=alt.X("threshold:Q", title="alert threshold", scale=alt.Scale(domain=[0.5, 1.0])),
            y=alt.Y("value:Q", title="precision / recall", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color(
                "measure:N",
                scale=alt.Scale(domain=["precision", "recall"], range=[visual.GREEN, visual.GREY]),
                legend=alt.Legend(orient="bottom", title=None, columns=2),
            ),
            tooltip=["threshold:Q", "measure:N", alt.Tooltip("value:Q", format=".2f"), "alerts:Q"],
        )
    )
    marks = pd.DataFrame(
        [{"threshold": current, "line": "saved threshold"}]
        + ([{"threshold": float(lowest), "line": "lowest for wanted precision"}] if lowest else [])
    )
    rules = (
        alt.Chart(marks)
        .mark_rule(strokeDash=[4, 3])
        .encode(
            x="threshold:Q",
            color=alt.Color(
                "line:N",
                scale=alt.Scale(
                    domain=["saved threshold", "lowest for wanted precision"],
                    range=[visual.ALERT, visual.GREEN],
                ),
                legend=alt.Legend(orient="bottom", title=None, columns=2),
            ),
            tooltip=["line:N", "threshold:Q"],
        )
    )
    st.altair_chart(alt.layer(lines, rules).resolve_scale(color="independent"), width="stretch")


def _alerts(api: ApiClient, ident: int, config: dict[str, Any]) -> None:
    form, beside = st.columns([3, 2])
    with beside:
        _threshold_curve(api, ident, float(config.get("alert_threshold", 0.7)))
    with form:
        _alert_form(api, ident, config)


def _alert_form(api: ApiClient, ident: int, config: dict[str, Any]) -> None:
    with st.form(f"alerts_{ident}"):
        threshold = st.number_input(
            "Alert threshold",
            min_value=0.5,
            max_value=1.0,
            step=0.01,
            value=float(config.get("alert_threshold", 0.7)),
            key=f"alert_threshold_{ident}",
        )
        url = st.text_input(
            "Webhook URL (empty: the global N8N_WEBHOOK_URL)",
            value=config.get("n8n_webhook_url") or "",
            key=f"n8n_webhook_url_{ident}",
        )
        st.caption(
            f"Effective: {config.get('effective_webhook_url') or 'none'} "
            f"({config.get('webhook_url_source') or 'no URL'})"
        )
        enabled = st.checkbox(
            "Send to webhook", value=bool(config.get("n8n_enabled")), key=f"n8n_enabled_{ident}"
        )
        modes = st.multiselect(
            "Send modes",
            SEND_MODES,
            default=[m for m in config.get("n8n_send_modes") or [] if m in SEND_MODES],
            key=f"n8n_send_modes_{ident}",
        )
        mode = st.radio(
            "Coins",
            ("all", "whitelist"),
            index=1 if config.get("coin_filter_mode") == "whitelist" else 0,
            horizontal=True,
            key=f"coin_filter_mode_{ident}",
        )
        whitelist = st.text_area(
            "Coin whitelist (one mint per line)",
            value="\n".join(config.get("coin_whitelist") or []),
            key=f"coin_whitelist_{ident}",
        )
        if st.form_submit_button("Save alert settings"):
            wanted = {
                "alert_threshold": round(float(threshold), 4),
                "n8n_webhook_url": url.strip() or None,
                "n8n_enabled": enabled,
                "n8n_send_modes": list(modes),
                "coin_filter_mode": mode,
                "coin_whitelist": [line.strip() for line in whitelist.splitlines() if line.strip()],
            }
            _patch(api, f"/api/models/{ident}/alert-config", config, wanted)


def _integers(
    api: ApiClient,
    ident: int,
    path: str,
    title: str,
    fields: dict[str, str],
    current: dict[str, Any],
) -> None:
    with st.form(f"{path.rsplit('/', 1)[-1]}_{ident}"):
        wanted = {
            name: int(
                st.number_input(
                    label,
                    min_value=0,
                    step=1,
                    value=int(current.get(name) or 0),
                    key=f"{name}_{ident}",
                )
            )
            for name, label in fields.items()
        }
        if st.form_submit_button(f"Save {title}"):
            _patch(api, path, current, wanted)


STATUS_TEXT = {
    "ok": "delivering",
    "retrying": "retrying (the last attempt failed, another one is due)",
    "failing": "failing",
    "no_attempts": "nothing sent yet",
    "no_url": "no webhook URL (set one below or N8N_WEBHOOK_URL)",
    "disabled": "sending is switched off",
}


def failure_rate(attempts: dict[str, Any]) -> float | None:
    """Failed attempts / all attempts (a retried failure counts each time it failed)."""
    counts = {k: int(v) for k, v in attempts.items() if isinstance(v, int)}
    total = sum(counts.values())
    return (total - counts.get("delivered", 0)) / total if total else None


def _webhook_health(api: ApiClient, ident: int) -> None:
    health = common.attempt(api.get, f"/api/models/{ident}/n8n-status")
    if not isinstance(health, dict):
        return
    status = str(health.get("status", "unknown"))
    text = STATUS_TEXT.get(status, status)
    if status == "ok":
        st.success(f"Webhook: {text}")
    elif status == "degraded":
        common.webhook_losses(
            api, health, key=f"retry_all_jobs_{ident}", scope={"active_model_id": ident}
        )
    elif status in ("failing", "retrying"):
        st.error(f"Webhook: {text}")
    else:
        st.info(f"Webhook: {text}")
    jobs = health.get("jobs") or {}
    last_error = health.get("last_error") or {}
    cols = st.columns(5)
    last_success = common.dig(health, "last_success.attempted_at")
    cols[0].metric("Last success", common.ago(last_success), help=common.when(last_success))
    cols[1].metric(
        "Failure rate", common.percent(failure_rate(health.get("attempts_by_outcome") or {}))
    )
    cols[2].metric("Pending jobs", common.number(jobs.get("pending")))
    cols[3].metric("Dead jobs", common.number(jobs.get("dead")))
    cols[4].metric(
        "Waiting jobs",
        common.number(jobs.get("waiting")),
        help="Held while the target answers 404 beyond the grace (endpoint missing); "
        "delivered when it answers again, when the URL changes, or on retry.",
    )
    history = health.get("history_seconds")
    st.caption(
        f"Target: {health.get('effective_webhook_url') or 'none'}"
        + (f" · counts cover the last {int(history) // 3600} h" if history else "")
        + (
            f" · last error {common.when(last_error.get('attempted_at'))}: "
            f"{last_error.get('status_code') or ''} {last_error.get('error') or ''}".rstrip()
            if last_error
            else ""
        )
    )
    dead = [job for job in health.get("dead_jobs") or [] if isinstance(job, dict)]
    if not dead:
        return
    st.markdown(f"**Dead jobs** (given up after their retries; newest {len(dead)})")
    for job in dead:
        left, right = st.columns([5, 1])
        left.markdown(
            f"Job #{job.get('id')} · coin `{visual.short_coin(job.get('coin_id'))}` · "
            f"attempts: {job.get('attempts')} · last: "
            # The stored error names its status code ("HTTP 500: ..."): once is enough.
            f"{job.get('last_error') or job.get('last_status_code') or 'no answer'}"
        )
        if right.button("Retry", key=f"retry_job_{job.get('id')}"):
            done = common.attempt(api.post, f"/api/webhooks/{job.get('id')}/retry")
            if done is not None:
                common.rerun_with(f"Webhook job #{job.get('id')} queued again.")


def _mode(api: ApiClient, ident: int, model: dict[str, Any]) -> None:
    """Live (alerts go to webhooks) or shadow (predicted, stored, evaluated, never sent);
    promoting a shadow model is one click."""
    if model.get("mode") == common.SHADOW:
        st.info("Shadow: predicted, stored and evaluated like any model, never sent to webhooks.")
        clicked = st.button("Promote to live", key=f"promote_{ident}", type="primary")
        if clicked and common.attempt(api.post, f"/api/models/{ident}/promote") is not None:
            common.rerun_with(f"Model {ident} is live: its alerts go to webhooks.")
        return
    st.caption("Live: alerts go to webhooks.")
    clicked = st.button("Run in shadow", key=f"shadow_{ident}")
    body = {"mode": "shadow"}
    if clicked and common.attempt(api.patch, f"/api/models/{ident}/mode", body) is not None:
        common.rerun_with(f"Model {ident} runs in shadow: nothing is sent.")


def _danger(api: ApiClient, ident: int, model: dict[str, Any]) -> None:
    left, right = st.columns(2)
    with left:
        if st.button("Reload model file", key=f"reload_{ident}"):
            with st.spinner("Reloading ..."):
                done = common.attempt(api.post, f"/api/models/{ident}/reload")
            if done is not None:
                common.rerun_with(f"Model {ident} reloaded.")
    with right:
        sure = st.checkbox(
            f"Yes, delete {common.model_name(model)} with its file and all its predictions",
            key=f"confirm_delete_{ident}",
        )
        clicked = st.button(
            "Delete model", key=f"delete_{ident}", disabled=not sure, type="primary"
        )
        if clicked and common.attempt(api.delete, f"/api/models/{ident}") is not None:
            st.session_state.pop("manage_model", None)
            common.rerun_with(f"Model {ident} deleted.")


def render(api: ApiClient, health: dict[str, Any]) -> None:
    st.header("Manage model")
    common.flash()
    models = common.need(api.models, include_inactive=True)
    if not models:
        st.info("No model imported yet.")
        return
    by_id = {common.model_id(m): m for m in models if common.model_id(m) is not None}
    chosen = st.selectbox(
        "Model",
        list(by_id),
        format_func=lambda i: common.model_label(by_id[i]),
        key="manage_model",
    )
    ident = chosen if chosen in by_id else next(iter(by_id))
    assert ident is not None
    model = by_id[ident]
    st.caption(
        f"{model.get('model_type', '')} · Training Service model {model.get('model_id')} · "
        f"target: {common.target_text(model)}"
    )
    config = common.need(api.get, f"/api/models/{ident}/alert-config")
    ignore = common.need(api.get, f"/api/models/{ident}/ignore-settings")
    caps = common.need(api.get, f"/api/models/{ident}/max-log-entries")

    st.subheader("Name")
    _rename(api, ident, model)
    st.subheader("Mode")
    _mode(api, ident, model)
    st.subheader("Webhook delivery")
    _webhook_health(api, ident)
    st.subheader("Alerts and webhook")
    _alerts(api, ident, config)
    st.subheader("Ignore windows")
    _integers(
        api, ident, f"/api/models/{ident}/ignore-settings", "ignore windows", IGNORE_FIELDS, ignore
    )
    st.subheader("Open-prediction caps")
    _integers(api, ident, f"/api/models/{ident}/max-log-entries", "caps", CAP_FIELDS, caps)
    st.subheader("Model file")
    _danger(api, ident, model)
