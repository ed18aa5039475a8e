"""Which successes a settlement flush writes to `webhook_endpoints` (issue 23)."""

from __future__ import annotations

from datetime import UTC, datetime

from actors.webhooks.dispatcher import successes_to_record

FAILING = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_success_is_written_the_first_time_and_after_the_reconfirm_interval() -> None:
    streaks = {"https://n8n/a": None}
    assert successes_to_record(streaks, {}, 100.0, 1.0) == ["https://n8n/a"]
    assert successes_to_record(streaks, {"https://n8n/a": 99.5}, 100.0, 1.0) == []
    assert successes_to_record(streaks, {"https://n8n/a": 99.0}, 100.0, 1.0) == ["https://n8n/a"]


def test_a_failure_is_never_written_as_a_success() -> None:
    streaks = {"https://n8n/a": FAILING, "https://n8n/b": None}
    assert successes_to_record(streaks, {}, 100.0, 1.0) == ["https://n8n/b"]


def test_a_url_never_confirmed_is_written_whatever_the_others() -> None:
    streaks = {"https://n8n/a": None, "https://n8n/b": None}
    confirmed = {"https://n8n/a": 99.9}
    assert successes_to_record(streaks, confirmed, 100.0, 1.0) == ["https://n8n/b"]
