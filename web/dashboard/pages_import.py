"""Import model: the Training Service's READY models that are not imported yet."""

from __future__ import annotations

from typing import Any

import streamlit as st

from web.dashboard import common
from web.dashboard.api_client import ApiClient

METRICS = ("accuracy", "f1", "precision", "recall", "roc_auc", "mcc")


def _metric(model: dict[str, Any], name: str) -> Any:
    return common.first(
        common.training_metric(model, name),
        common.dig(model, name, f"training_{name}"),
    )


def _imported_ids(api: ApiClient) -> set[int]:
    return {
        int(m["model_id"])
        for m in common.need(api.models, include_inactive=True)
        if isinstance(m.get("model_id"), int)
    }


# What a new model sends to n8n. Alerts only is proposed: every prediction makes one n8n
# execution per coin tick (~85 % without an alert), which burns hosted plans' quotas.
SEND_CHOICES = {
    "Alerts only (recommended)": ["alerts_only"],
    "Every prediction": ["all"],
}


def _import(api: ApiClient, model: dict[str, Any], send_modes: list[str]) -> None:
    ident = int(model["id"])
    with st.spinner(f"Importing model {ident} (download, check, load) ..."):
        imported = common.attempt(api.import_model, ident)
    if imported is None:
        return
    active = common.model_id(imported)
    sent = common.attempt(
        api.patch, f"/api/models/{active}/alert-config", {"n8n_send_modes": send_modes}
    )
    if sent is not None:
        common.rerun_with(
            f"Imported model {ident} {model.get('name', '')} as active model #{active}, "
            f"sending {', '.join(send_modes)} to n8n."
        )


def render(api: ApiClient, health: dict[str, Any]) -> None:
    st.header("Import model")
    common.flash()
    available = common.need(api.available_models)
    imported = _imported_ids(api)
    candidates = [
        m
        for m in available
        if isinstance(m.get("id"), int)
        and m["id"] not in imported
        and not m.get("already_imported")
        and not m.get("is_imported")
        and str(m.get("status", "READY")).upper() == "READY"
    ]
    if not candidates:
        st.info("Every READY model of the Training Service is imported.")
        return
    st.caption(f"{len(candidates)} READY model(s) not imported yet")
    for model in candidates:
        ident = model["id"]
        features = model.get("features") or []
        count = model.get("features_count", len(features))
        phases = model.get("phases")
        with st.container(border=True):
            st.markdown(f"**#{ident} {model.get('name', '')}** · {model.get('model_type', '')}")
            st.write(
                f"Target: {common.target_text(model)} · Features: {count} · "
                f"Phases: {', '.join(map(str, phases)) if phases else 'all'}"
            )
            cols = st.columns(len(METRICS))
            for col, name in zip(cols, METRICS, strict=True):
                col.metric(name, common.number(_metric(model, name), 3))
            problems = [str(p) for p in model.get("problems") or []]
            if problems:
                # Shown before the click; the import still goes to the API, which decides.
                st.warning("The API expects to refuse this model: " + "; ".join(problems))
            choice = st.radio(
                "Send to n8n",
                list(SEND_CHOICES),
                horizontal=True,
                key=f"send_modes_{ident}",
                help="Alerts only: one n8n execution per alert. Every prediction: one per "
                "coin tick (your workflow filters). Changeable later on Manage model.",
            )
            if st.button("Import", key=f"import_{ident}"):
                _import(api, model, SEND_CHOICES[choice or next(iter(SEND_CHOICES))])
