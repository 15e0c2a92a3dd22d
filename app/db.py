"""The web app's database handle: one `Database` per app, one session per request (the flaskr
`get_db()` idiom), closed at teardown."""

from __future__ import annotations

from flask import Flask, current_app, g
from sqlalchemy.orm import Session

from core.db import Database


def init_app(app: Flask) -> None:
    app.extensions["verity.db"] = Database(app.config["VERITY"].database_url)
    app.teardown_appcontext(_close_session)


def get_db() -> Database:
    return current_app.extensions["verity.db"]


def get_session() -> Session:
    """The request's session, closed at teardown (the flaskr `get_db()` idiom)."""
    if "db_session" not in g:
        g.db_session = get_db().session()
    return g.db_session


def _close_session(_exc: BaseException | None) -> None:
    s = g.pop("db_session", None)
    if s is not None:
        s.close()


def get_lifecycle():
    """This app's lifecycle (core/lifecycle.py): every status change of an upload goes through it."""
    return current_app.extensions["verity.lifecycle"]


def get_live():
    """This app's live sessions (core/live.py)."""
    return current_app.extensions["verity.live"]
