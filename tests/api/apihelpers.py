"""Helpers for the platform API tests."""

from __future__ import annotations

import io
import json
import threading


def make_key(app, name="platform", **kw) -> str:
    from core.clients import create_client

    with app.extensions["verity.db"].session() as s:
        return create_client(s, name, **kw).key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def multipart(data: bytes, name: str = "photo.jpg", **fields):
    return {"file": (io.BytesIO(data), name), **fields}


class Receiver:
    def __init__(self, fail_first: int = 0, status: int = 500):
        self.fail_first = fail_first
        self.status = status
        self.requests: list[dict] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hook"


def body_of(r) -> dict:
    return json.loads(r.get_data(as_text=True)) if hasattr(r, "get_data") else r.json()
