"""Fixtures for the review UI: accounts, a signed-in client factory, an app over plain http."""

from __future__ import annotations

import pytest

from tests.review.kit import Browser, add_user


@pytest.fixture
def app(settings):
    from app import create_app

    # Plain http in the test client: the Secure flag is checked separately (test_auth.py).
    app = create_app({"VERITY": settings, "TESTING": True, "VERITY_COOKIE_SECURE": False})
    yield app
    app.extensions["verity.db"].dispose()


@pytest.fixture
def db(app):
    with app.app_context():
        s = app.extensions["verity.db"].session()
        yield s
        s.close()


@pytest.fixture
def users(app):
    return {"mod": add_user(app, "mod"), "mod2": add_user(app, "mod2"), "admin": add_user(app, "admin", "admin")}


@pytest.fixture
def browser(app, users):
    def make(name: str | None = None):
        b = Browser(app)
        if name:
            r = b.login(name)
            assert r.status_code == 302, r.get_data(as_text=True)[:300]
        return b
    return make
