"""One rule for what is a secret, applied to URLs, DSNs, free text and log events.

Secrets are recognised by the *name* they travel under (`password`, `token`,
`api_key`, `sslpassword`, `X-Signature`...), never by guessing at values,
except in URL paths, where webhook services put their secret (an n8n webhook
id, a bot token) as a plain segment: there a long token-like segment is
masked too. Everything that shows text to a person (the `/api/config` view,
API error bodies, log lines) goes through this module, so one new key name
added here is masked everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "MASK",
    "is_secret_key",
    "mask_dsn",
    "mask_mapping",
    "mask_text",
    "mask_url",
]

MASK = "***"

# A key is secret when its name, lowercased and without separators, contains one of
# these (so `X-Api-Key`, `apiKey`, `client_secret`, `sslpassword` match)...
_SECRET_PARTS = (
    "password",
    "passwd",
    "secret",
    "credential",
    "apikey",
    "accesskey",
    "privatekey",
    "signature",
    "sessionid",
)
# ...or its last word is one of these, which are too common inside other names
# (`api_token` and `x_auth` are secrets; `api_auth_max_failures`, `token_count` are not).
_SECRET_LAST_WORDS = frozenset(
    {"token", "key", "auth", "authorization", "pwd", "pass", "sig", "cookie", "session", "jwt"}
)
# Keys that end in "key" but hold no secret (a webhook job's dedup key is shown on purpose).
_NOT_SECRET = frozenset({"idempotencykey", "sortkey"})
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")

# A URL path segment that looks like a credential: long, token alphabet, letters and digits.
_TOKEN_SEGMENT = re.compile(r"^(?=.*[A-Za-z])(?=.*\d)[A-Za-z0-9_\-:.~]{24,}$")
# Trailing punctuation belongs to the sentence, not the URL ("GET http://h/x: 404").
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s\"'<>]*[^\s\"'<>.,:;!?)\]}]")
# name=value pairs (query strings, DSNs) and "name": "value" echoes (JSON, Python reprs) in
# free text; a quoted value runs to its closing quote. An unquoted `name: text` is left
# alone: it is how our own messages name a field ("token: unknown field").
_PAIR = re.compile(
    r"""(?P<key>[A-Za-z][A-Za-z0-9_.\-]*)(?P<sep>(?P<q1>["'])\s*:\s*|\s*(?:=|%3[Dd])\s*)"""
    r"""(?:(?P<q2>["'])(?P<quoted>[^"'\n]*)(?P=q2)|(?P<bare>[^\s&;,"'}\]]+))"""
)
# A bare bearer token in text, not the words "bearer token": it holds a digit.
_BEARER = re.compile(r"(?i)\b(bearer)\s+(?=[A-Za-z0-9._~+/\-]*\d)[A-Za-z0-9._~+/\-]{8,}=*")


def is_secret_key(name: str) -> bool:
    """True when a value stored under `name` must not be shown."""
    words = [w.lower() for w in _WORD.findall(name)]
    key = "".join(words)
    if not key or key in _NOT_SECRET:
        return False
    if any(part in key for part in _SECRET_PARTS):
        return True
    return words[-1] in _SECRET_LAST_WORDS or key.endswith(("token", "key"))


def _mask_query(query: str) -> str:
    pairs = []
    for part in query.split("&"):
        name, eq, value = part.partition("=")
        pairs.append(f"{name}={MASK}" if eq and value and is_secret_key(name) else part)
    return "&".join(pairs)


def _mask_path(path: str) -> str:
    segments = path.split("/")
    shown: list[str] = []
    follows_secret_name = False
    for segment in segments:
        name, sep, value = segment.partition("=")
        if not sep:
            name, sep, value = segment.partition(";")
        if follows_secret_name and segment:
            shown.append(MASK)
        elif sep and value and is_secret_key(name):
            shown.append(f"{name}{sep}{MASK}")
        elif _TOKEN_SEGMENT.match(segment) and not segment.isdigit():
            shown.append(MASK)
        else:
            shown.append(segment)
        follows_secret_name = bool(segment) and is_secret_key(segment)
    return "/".join(shown)


def mask_url(url: str) -> str:
    """The URL with its password, secret query values and secret path segments masked."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{host}" if colon else f"{user}@{host}"
    return urlunsplit(
        (
            parts.scheme,
            netloc,
            _mask_path(parts.path),
            _mask_query(parts.query),
            _mask_query(parts.fragment),
        )
    )


def mask_dsn(dsn: str) -> str:
    """A PostgreSQL DSN in either form (URL or `key=value ...`) with its secrets masked."""
    if "://" in dsn:
        return mask_url(dsn)
    return mask_text(dsn)


def _mask_pair(match: re.Match[str]) -> str:
    quote = match["q2"] or ""
    head = f"{match['key']}{match['sep']}{quote}"
    if is_secret_key(match["key"]) and not (match["bare"] or "").startswith(MASK):
        return f"{head}{MASK}{quote}"
    if match["quoted"]:  # a quoted message may itself carry `token=...`
        return f"{head}{mask_text(match['quoted'])}{quote}"
    return match[0]


def mask_text(text: str) -> str:
    """Free text (an error message, a log line, an echoed response body) with secrets masked:
    URLs as in `mask_url`, `name=value` / `"name": "value"` pairs by name, bearer tokens."""
    if not text:
        return text
    text = _URL.sub(lambda m: mask_url(m[0]), text)
    text = _BEARER.sub(lambda m: f"{m[1]} {MASK}", text)
    return _PAIR.sub(_mask_pair, text)


def mask_mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy with values under secret keys masked and every string's text masked,
    recursively (log events, error details)."""
    return {key: _mask_value(key, value) for key, value in values.items()}


def _mask_value(key: Any, value: Any) -> Any:
    if isinstance(key, str) and is_secret_key(key) and value not in (None, "", b""):
        return MASK
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {k: _mask_value(k, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_value(None, v) for v in value]
    if isinstance(value, tuple):
        return tuple(_mask_value(None, v) for v in value)
    return value
