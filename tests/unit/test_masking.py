"""The one masking rule: secrets found by the name they travel under, everything else kept."""

from __future__ import annotations

import pytest

from storage.masking import is_secret_key, mask_dsn, mask_mapping, mask_text, mask_url


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "PGPASSWORD",
        "passwd",
        "token",
        "api_token",
        "access_token",
        "accessToken",
        "secret",
        "client_secret",
        "key",
        "apikey",
        "api_key",
        "X-Api-Key",
        "sslpassword",
        "auth",
        "Authorization",
        "signature",
        "X-Hub-Signature",
        "session_id",
    ],
)
def test_secret_key_names(name: str) -> None:
    assert is_secret_key(name)


@pytest.mark.parametrize(
    "name",
    [
        "api_auth_max_failures",
        "api_auth_failure_delay_seconds",
        "token_count",
        "idempotency_key",
        "author",
        "status_code",
        "db_dsn",
        "n8n_webhook_url",
        "mode",
    ],
)
def test_names_that_only_mention_a_secret_word_are_kept(name: str) -> None:
    assert not is_secret_key(name)


def test_urls_lose_passwords_secret_query_values_and_token_like_path_segments() -> None:
    url = (
        "https://bot:pw1@n8n.example/webhook/6f1c1f0e-3b1a-4d7e-9b1e-2a9c7d0e5f11/token/abc"
        "?api_key=k1&apikey=k2&access_token=k3&mode=prod&X-Signature=s1"
    )
    shown = mask_url(url)
    for secret in ("pw1", "6f1c1f0e-3b1a-4d7e-9b1e-2a9c7d0e5f11", "/abc", "k1", "k2", "k3", "s1"):
        assert secret not in shown
    assert shown.startswith("https://bot:***@n8n.example/webhook/***/token/***?")
    assert "mode=prod" in shown
    # Short path segments and numeric ids are not secrets.
    assert mask_url("http://ts:8000/api/models/42/download") == (
        "http://ts:8000/api/models/42/download"
    )


def test_dsns_in_both_forms() -> None:
    assert mask_dsn("postgresql://pp:pw@db:5432/pp?sslmode=require&sslpassword=x") == (
        "postgresql://pp:***@db:5432/pp?sslmode=require&sslpassword=***"
    )
    assert mask_dsn("host=db user=pp password='p w' sslpassword=x dbname=pp") == (
        "host=db user=pp password='***' sslpassword=*** dbname=pp"
    )


def test_free_text_masks_echoed_pairs_and_keeps_our_own_field_messages() -> None:
    echoed = (
        "GET http://ts/api/models?token=t1: HTTP 500: "
        '{"detail": "bad token=t2", "access_token": "t3", \'password\': \'t4\'}'
    )
    shown = mask_text(echoed)
    for secret in ("t1", "t2", "t3", "t4"):
        assert f"={secret}" not in shown and f"'{secret}'" not in shown
        assert f'"{secret}"' not in shown
    assert "HTTP 500" in shown
    assert mask_text("token: unknown field; known: name") == "token: unknown field; known: name"
    assert mask_text("Authorization: Bearer abc.def-123") == "Authorization: Bearer ***"


def test_mappings_mask_by_key_and_inside_nested_text() -> None:
    event = {
        "event": "webhook_failed",
        "api_key": "k1",
        "url": "http://h/x?secret=s1",
        "attempt": 3,
        "nested": {"password": "p1", "items": ["token=t1", 5]},
        "idempotency_key": "abc",
    }
    shown = mask_mapping(event)
    assert shown["api_key"] == "***"
    assert shown["url"] == "http://h/x?secret=***"
    assert shown["attempt"] == 3
    assert shown["nested"] == {"password": "***", "items": ["token=***", 5]}
    assert shown["idempotency_key"] == "abc"
