"""The one family of errors storage raises on purpose.

Every error of storage derives from `StorageError` and carries a stable `code`
(for scripts, logs and the API's error body); the class docstring is the default
message. None carries an HTTP status: which status answers which code is decided
at the web edge (`web/errors.py`). Errors that callers already catch by a builtin
type (ValueError, pickle.UnpicklingError) keep it as a second base.
"""

from __future__ import annotations


class StorageError(Exception):
    """Storage refused or could not do what was asked."""

    code: str = "storage_error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or self.code).strip().splitlines()[0])
