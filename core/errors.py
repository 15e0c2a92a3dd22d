"""Refusals with a code the platform can act on: raised by the core (the door, the lifecycle) and
turned into JSON `{code, message, request_id}` by the web app (app/errors.py)."""

from __future__ import annotations


class ApiError(Exception):
    """A refusal: the HTTP status the web app answers with, a stable machine `code`, a message
    for people, and extra JSON fields (e.g. `limit_bytes`, `retry_after`)."""

    def __init__(self, status: int, code: str, message: str, **extra):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra
