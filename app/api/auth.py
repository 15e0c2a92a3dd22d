"""Bearer-key authentication for /api/v1. The key is looked up by its hash and never logged."""

from __future__ import annotations

from flask import g, request

from app.db import get_session
from core.clients import authenticate
from core.models import ApiClient

_UNSET = object()


def current_client() -> ApiClient | None:
    """The active client of this request's `Authorization: Bearer <key>`, or None (cached on g)."""
    c = g.get("api_client", _UNSET)
    if c is _UNSET:
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        c = authenticate(get_session(), key.strip()) if scheme.lower() == "bearer" else None
        g.api_client = c
    return c
