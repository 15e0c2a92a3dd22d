"""Verity's web app: `create_app()` is a short list of init_app calls (cf. Redash, flaskr)."""

from __future__ import annotations

from typing import Any


def create_app(config: dict[str, Any] | None = None):
    """Build the app. `config` may hold `VERITY` (a ready Settings) and any Flask config keys;
    otherwise settings come from the environment (core/settings.py)."""
    from flask import Flask
    from flask_wtf.csrf import CSRFProtect

    from app import api, db, errors, health, metrics, page
    from core import defaults
    from core.bank import DecisionCurator
    from core.lifecycle import Lifecycle
    from core.live import Live
    from core.queue import redis_connection
    from core.settings import load_settings
    from core.storage import make_storage, sweep_tmp
    from core.webhooks.outbox import Outbox

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
    if settings.proxy_hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        n = settings.proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)
    storage = app.extensions["verity.storage"] = make_storage(settings)
    sweep_tmp(settings.tmp_dir, defaults.SPOOL_MAX_AGE_SECONDS)  # spools of a killed web process
    redis = app.extensions["verity.redis"] = redis_connection(settings)

    CSRFProtect(app)
    errors.init_app(app)
    db.init_app(app)
    # Every status change goes through this process's lifecycle; webhooks subscribe here.
    lifecycle = app.extensions["verity.lifecycle"] = Lifecycle(settings, storage, redis)
    lifecycle.subscribe(Outbox(settings, app.extensions["verity.db"].engine, redis).on_status_change)
    # Confirmed fakes go into the known-fakes bank (and out again when an admin revises them).
    lifecycle.subscribe(DecisionCurator(settings, app.extensions["verity.db"].engine, storage).on_status_change)
    # Live sessions (core/live.py): their webhooks too.
    live = app.extensions["verity.live"] = Live(lifecycle, redis)
    live.subscribe(Outbox(settings, app.extensions["verity.db"].engine, redis).on_live_event)
    page.init_app(app)
    api.init_app(app)
    health.init_app(app)
    metrics.init_app(app)
    from app import auth, review

    auth.init_app(app)
    review.init_app(app)
    _add_favicon(app)
    return app


def _add_favicon(app) -> None:
    """/favicon.ico, which browsers ask for on every page (the pages also link app/static/favicon.svg)."""
    from flask import send_from_directory

    @app.get("/favicon.ico")
    def favicon():
        return send_from_directory(app.static_folder, "favicon.ico", mimetype="image/x-icon", max_age=86400)
