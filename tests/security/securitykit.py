"""Helpers for the security checks: an app over plain http (fixture `make_app`, re-exported by
conftest.py), accounts by role, a signed-in client."""

from __future__ import annotations

import re

import pytest

PASSWORD = "s3cret-Passw0rd-for-tests"


@pytest.fixture
def make_app(settings):
    made = []

    def make(csrf: bool = True, **config):
        from app import create_app

        app = create_app({"VERITY": settings, "TESTING": True, "VERITY_COOKIE_SECURE": False,
                          "WTF_CSRF_ENABLED": csrf, "LOGIN_RATE_LIMIT": "1000/minute", **config})
        made.append(app)
        return app

    yield make
    for app in made:
        app.extensions["verity.db"].dispose()


def add_user(app, name: str, role: str) -> None:
    from core.models import User

    with app.extensions["verity.db"].session() as s:
        u = User(username=name, role=role, active=True)
        u.set_password(PASSWORD)
        s.add(u)
        s.commit()


def csrf_token(html: str) -> str | None:
    m = re.search(r'name="csrf[-_]token"[^>]*(?:content|value)="([^"]+)"', html)
    return m.group(1) if m else None


def login(app, name: str):
    """A test client signed in as `name` through the real form (with its CSRF token when on)."""
    c = app.test_client()
    token = csrf_token(c.get("/auth/login").get_data(as_text=True))
    data = {"username": name, "password": PASSWORD}
    if token:
        data["csrf_token"] = token
    r = c.post("/auth/login", data=data)
    assert r.status_code == 302, r.get_data(as_text=True)[:300]
    return c
