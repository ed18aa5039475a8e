"""pump-predictor dashboard: `streamlit run web/dashboard/app.py`.

Talks only to the REST API (`API_BASE_URL`), never to the database, so it can
run anywhere the API is reachable and shows exactly what scripts and n8n see.
With a token configured, each browser session signs in with it first
(web/dashboard/login.py); the dashboard itself holds no token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from web.dashboard import (
    common,
    login,
    pages_backtest,
    pages_import,
    pages_manage,
    pages_overview,
    pages_predictions,
    pages_statistics,
)
from web.dashboard.api_client import ApiClient

Page = Callable[[ApiClient, dict[str, Any]], None]

PAGES: dict[str, Page] = {
    "Overview": pages_overview.render,
    "Import model": pages_import.render,
    "Manage model": pages_manage.render,
    "Predictions": pages_predictions.render,
    "Statistics": pages_statistics.render,
    "Backtest": pages_backtest.render,
}


def main() -> None:
    st.set_page_config(page_title="pump-predictor", layout="wide")
    st.sidebar.title("pump-predictor")
    api = login.require_sign_in(common.client())
    # ?page=Predictions opens a page directly (bookmarks, links from alerts, screenshots).
    wanted = st.query_params.get("page")
    if "page" not in st.session_state and wanted in PAGES:
        st.session_state["page"] = wanted
    page = st.sidebar.radio("Page", list(PAGES), key="page")
    st.sidebar.caption(f"API: {api.base_url}")
    # /api/health needs no token and answers even when degraded (503 with reasons).
    health = common.need(api.health)
    if health.get("demo"):
        st.warning("DEMO MODE: generated coins and models, not real data.")
    st.sidebar.caption(f"Service {health.get('status', 'unknown')} · v{health.get('version', '?')}")
    login.sign_out_button()
    PAGES[page or "Overview"](api, health)


main()
