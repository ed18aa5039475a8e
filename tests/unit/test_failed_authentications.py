"""The per-client failure window behind the API's 429 (policy only, no server)."""

from __future__ import annotations

import pytest

from web import auth
from web.auth import FailedAuthentications


def test_a_client_is_blocked_after_the_limit_until_its_oldest_counted_failure_expires() -> None:
    limiter = FailedAuthentications(limit=3, window_seconds=60)
    for at in (0.0, 10.0, 20.0):
        assert limiter.blocked_for("10.0.0.1", at) == 0
        limiter.record("10.0.0.1", at)
    assert limiter.blocked_for("10.0.0.1", 21.0) == pytest.approx(39.0)
    assert limiter.blocked_for("10.0.0.2", 21.0) == 0  # per client
    assert limiter.blocked_for("10.0.0.1", 60.5) == 0  # the failure at 0 has left the window


def test_no_limit_remembers_nothing() -> None:
    limiter = FailedAuthentications(limit=0, window_seconds=60)
    for at in range(1000):
        limiter.record("10.0.0.1", float(at) / 1000)
    assert limiter.blocked_for("10.0.0.1", 1.0) == 0
    assert not limiter.tracked_clients


def test_memory_is_bounded_by_forgetting_the_least_recently_failing_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(auth, "MAX_TRACKED_CLIENTS", 3)
    limiter = FailedAuthentications(limit=1, window_seconds=60)
    for n, client in enumerate(["a", "b", "c", "a", "d"]):
        limiter.record(client, float(n))
    assert limiter.tracked_clients == {"c", "a", "d"}
    assert limiter.blocked_for("b", 5.0) == 0
    assert limiter.blocked_for("a", 5.0) > 0
