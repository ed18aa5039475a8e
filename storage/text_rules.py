"""What text the service accepts, wherever it comes from (API callers, the Training Service).

PostgreSQL cannot store a NUL character in `text`, and a lone UTF-16 surrogate
cannot be encoded as UTF-8 at all: either one reaching a query is a server
error, so they are refused at the edge with the field named.
"""

from __future__ import annotations

import re

__all__ = ["MAX_NAME_LENGTH", "text_problem"]

# One cap for every model name (imported or custom): the Training Service's own
# `ml_models.name` is varchar(255), so every name it can hold fits.
MAX_NAME_LENGTH = 255

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def text_problem(value: str) -> str | None:
    """Why `value` cannot be accepted as text, or None when it can."""
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    if found[0] == "\x00":
        return "must not contain a NUL character"
    return "must not contain an unpaired UTF-16 surrogate (invalid Unicode)"
