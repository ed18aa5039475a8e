"""The start-up banner shows addresses a browser on this machine can open."""

from __future__ import annotations

import pytest

from actors.app.cli import _print_banner
from storage.config import load_settings


@pytest.mark.parametrize(
    ("env", "dashboard_url"),
    [
        # The dashboard on its own loopback default while the API listens everywhere.
        ({"API_HOST": "0.0.0.0", "STREAMLIT_HOST": "127.0.0.1"}, "http://127.0.0.1:8501/"),
        ({"API_HOST": "127.0.0.1", "STREAMLIT_HOST": "0.0.0.0"}, "http://127.0.0.1:8501/"),
        ({"API_HOST": "0.0.0.0", "STREAMLIT_HOST": "127.0.0.2"}, "http://127.0.0.2:8501/"),
    ],
)
def test_the_dashboard_line_follows_streamlit_host_not_the_api_host(
    env: dict[str, str], dashboard_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings(env={**env, "STREAMLIT_PORT": "8501"})
    _print_banner(settings, 8000, dashboard=True, demo=False)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[-1] for line in lines if "dashboard" in line] == [dashboard_url]
    assert any("http://127.0.0.1:8000/" in line for line in lines if "status page" in line)
