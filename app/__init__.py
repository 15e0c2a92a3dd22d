"""Verity's web app: `create_app()` is a short list of init_app calls (cf. Redash, flaskr)."""

from __future__ import annotations

from typing import Any


def create_app(config: dict[str, Any] | None = None):
    """Build the app. `config` may hold `VERITY` (a ready Settings) and any Flask config keys;
    otherwise settings come from the environment (app/settings.py)."""
    from flask import Flask
    from flask_wtf.csrf import CSRFProtect

    from app import api, db, defaults, errors, health, metrics, page
    from app.queue import redis_connection
    from app.settings import load_settings
    from app.storage import make_storage, sweep_tmp

    config = dict(config or {})
    settings = config.pop("VERITY", None) or load_settings()
    app = Flask(__name__)
    app.config.update(
        VERITY=settings,
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_upload_bytes + defaults.UPLOAD_FORM_OVERHEAD_BYTES,
        MAX_FORM_MEMORY_SIZE=500_000,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session; the page may sit open
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        JSON_SORT_KEYS=False,
    )
    app.config.update(config)
    app.extensions["verity.storage"] = make_storage(settings)
    sweep_tmp(settings.tmp_dir, defaults.SPOOL_MAX_AGE_SECONDS)  # spools of a killed web process
    app.extensions["verity.redis"] = redis_connection(settings)

    CSRFProtect(app)
    errors.init_app(app)
    db.init_app(app)
    app.register_blueprint(page.bp)
    api.init_app(app)
    health.init_app(app)
    metrics.init_app(app)
    from app import auth, review

    auth.init_app(app)
    review.init_app(app)
    return app
