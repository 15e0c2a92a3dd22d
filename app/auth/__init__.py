"""Accounts for the review UI: Flask-Login sessions, roles, a rate-limited login form.

The JSON API (/api/v1) does not use these sessions; it authenticates with API keys.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from urllib.parse import urlsplit

from flask import Blueprint, Flask, abort, current_app, redirect, render_template, request, url_for

from core import defaults

bp = Blueprint("auth", __name__, url_prefix="/auth", template_folder="templates")


def role_required(role: str):
    """login_required plus a role check: 403 for a signed-in user without the role."""
    def wrap(view):
        @functools.wraps(view)
        def inner(*a, **kw):
            from flask_login import current_user

            if not current_user.is_authenticated:
                return current_app.login_manager.unauthorized()
            if role == "admin" and not current_user.is_admin:
                abort(403, "admins only")
            return view(*a, **kw)
        return inner
    return wrap


def _safe_next(target: str | None) -> str:
    """Only a local path is a valid post-login target (no open redirect)."""
    if target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and target.startswith("/") and not target.startswith("//"):
            return target
    return url_for("review.queue")


@bp.route("/login", methods=["GET", "POST"])
def login():
    from flask_login import current_user, login_user
    from sqlalchemy import select

    from app.db import get_session
    from core.lifecycle import audit
    from core.models import User, utcnow
    from core.models.accounts import check_password_of

    if current_user.is_authenticated and request.method == "GET":
        return redirect(_safe_next(request.args.get("next")))
    error = None
    if request.method == "POST":
        username = (request.form.get("username") or "").strip()
        password = request.form.get("password") or ""
        s = get_session()
        user = s.scalar(select(User).where(User.username == username)) if username else None
        if check_password_of(user, password) and user.is_active:
            login_user(user)
            user.last_login_at = utcnow()
            audit(s, "auth.login", user.actor, detail={"ip": request.remote_addr})
            s.commit()
            return redirect(_safe_next(request.form.get("next")))
        audit(s, "auth.login_failed", f"anonymous:{request.remote_addr}", detail={"username": username[:128]})
        s.commit()
        error = "Wrong username or password."
    return render_template("auth/login.html", error=error, next=request.args.get("next", "")), \
        (401 if error else 200)


@bp.post("/logout")
def logout():
    """Sign out everywhere: the account's session generation goes up, so every session of it
    (this browser's and any copy of its cookie) ends, not only this cookie."""
    from flask_login import current_user, logout_user

    from app.db import get_session
    from core.lifecycle import audit
    from core.models import User

    if current_user.is_authenticated:
        s = get_session()
        user = s.get(User, current_user.id)
        user.session_generation = (user.session_generation or 0) + 1
        audit(s, "auth.logout", user.actor, detail={"ip": request.remote_addr})
        s.commit()
    logout_user()
    return redirect(url_for("auth.login"))


def _load_user(user_id: str):
    from app.db import get_session
    from core.models import User

    uid = user_id.partition(":")[0]
    if not uid.isdigit():
        return None
    user = get_session().get(User, int(uid))
    if user is None or not user.matches_session(user_id):
        return None
    return user


def init_app(app: Flask) -> None:
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address
    from flask_login import LoginManager

    secure = app.config["VERITY"].cookie_secure
    for key, value in {
        "SESSION_COOKIE_SECURE": secure,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_NAME": "verity_session",
        "REMEMBER_COOKIE_SECURE": secure,
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "PERMANENT_SESSION_LIFETIME": timedelta(hours=defaults.SESSION_HOURS),
    }.items():
        app.config[key] = value  # Flask's own defaults exist for these keys: setdefault would keep them
    if app.config.get("VERITY_COOKIE_SECURE") is not None:  # tests over plain http set this
        app.config["SESSION_COOKIE_SECURE"] = app.config["REMEMBER_COOKIE_SECURE"] = \
            bool(app.config["VERITY_COOKIE_SECURE"])

    lm = LoginManager()
    lm.login_view = "auth.login"
    lm.login_message = "Sign in to continue."
    lm.session_protection = "strong"
    lm.user_loader(_load_user)
    lm.init_app(app)

    storage = app.config.get("LOGIN_RATELIMIT_STORAGE_URI") or app.config["VERITY"].require_redis_url()
    limiter = Limiter(key_func=get_remote_address, storage_uri=storage, key_prefix="verity-login",
                      strategy="fixed-window")
    limiter.init_app(app)
    app.extensions["verity.login_limiter"] = limiter
    limit = app.config.get("LOGIN_RATE_LIMIT", defaults.LOGIN_RATE_LIMIT)
    app.register_blueprint(bp)
    # Wrapped per app (the blueprint is shared by every app the tests build).
    app.view_functions["auth.login"] = limiter.limit(
        limit, methods=["POST"], error_message="too many sign-in attempts; wait a minute")(login)

    @app.context_processor
    def _user_ctx():
        from flask_login import current_user

        return {"current_user": current_user}

