"""The one family of errors the actors raise on purpose.

Every error of `actors` derives from `ActorError` and carries a stable `code`;
the class docstring is the default message. None carries an HTTP status: the web
edge (`web/errors.py`) maps codes to statuses. An error that a library catches by a
builtin type (aiohttp's resolver: OSError) keeps that type as a second base.
"""

from __future__ import annotations

from typing import Literal


class ActorError(Exception):
    """The running system refused or could not do what was asked."""

    code: str = "actor_error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or self.code).strip().splitlines()[0])


class ManualPredictError(ActorError):
    """A prediction on request that cannot be made: no such coin row or model
    (`not_found`), or no model running to make it (`conflict`)."""

    def __init__(self, code: Literal["not_found", "conflict"], field: str, message: str) -> None:
        super().__init__(message)
        self.code, self.field, self.message = code, field, message
