"""Sign-in: with a token configured, nothing is shown before the user gives it.

The dashboard process never holds the API token. Each browser session proves it
by typing the token, which the API checks; the session then acts with exactly
that token, kept in the session's memory on the dashboard server (never in the
browser's storage or the URL) and dropped on sign-out or when the tab closes.
"""

from __future__ import annotations

import streamlit as st

from web.dashboard import common
from web.dashboard.api_client import ApiClient, ApiUnreachable, token_required


def require_sign_in(api: ApiClient) -> ApiClient:
    """The session's client once it has a token the API accepts; otherwise the sign-in
    form, and the page stops there."""
    if api.token or not token_required():
        return api
    st.header("Sign in")
    st.write("This pump-predictor API needs its token. Enter it to use the dashboard.")
    with st.form("sign_in"):
        token = st.text_input("API token", type="password", key="sign_in_token")
        submitted = st.form_submit_button("Sign in")
    if submitted and token.strip():
        candidate = api.with_token(token.strip())
        try:
            accepted = candidate.token_accepted()
        except ApiUnreachable as exc:
            st.error(common.unreachable_message(exc))
            common.stop()
        if accepted:
            st.session_state["_api_client"] = candidate
            st.session_state.pop("sign_in_token", None)
            st.rerun()
        st.error("The API did not accept this token.")
    elif submitted:
        st.error("Enter the token.")
    common.stop()


def sign_out_button() -> None:
    if token_required() and st.sidebar.button("Sign out", key="sign_out"):
        st.session_state.pop("_api_client", None)
        st.rerun()
