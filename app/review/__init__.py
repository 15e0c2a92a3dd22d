"""The moderator review UI (/review), its admin pages (routing settings, API keys) and the RQ
dashboard for admins (/admin/rq)."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, abort, jsonify, request

RQ_DASHBOARD_PREFIX = "/admin/rq"
RQ_DASHBOARD_ACTIONS = {"rq_dashboard.requeue_all", "rq_dashboard.requeue_job_view", "rq_dashboard.delete_job_view",
                        "rq_dashboard.empty_queue", "rq_dashboard.compact_queue"}
"""rq-dashboard's views that change something: POST only, same origin (its /requeue/<queue> also
answers GET, so a cross-site link would re-run every failed job with an admin's Lax cookie)."""


def init_app(app: Flask) -> None:
    from app.review import bank, calibration, keys  # noqa: F401  (their routes are on the same blueprint)
    from app.review.views import bp

    app.register_blueprint(bp)
    _mount_rq_dashboard(app)

    @app.get("/review")
    def _review_slash():
        from flask import redirect, url_for

        return redirect(url_for("review.queue"))


def _mount_rq_dashboard(app: Flask) -> None:
    import rq_dashboard
    from rq.serializers import JSONSerializer

    rq_dashboard.web.config.serializer = JSONSerializer  # our jobs are JSON (core/queue.py)
    app.config["RQ_DASHBOARD_REDIS_URL"] = app.config["VERITY"].require_redis_url()
    rq_dashboard.web.setup_rq_connection(app)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=RQ_DASHBOARD_PREFIX)
    csrf = app.extensions.get("csrf")
    if csrf is not None:
        # Its own JavaScript posts without our token; the same-origin check below stands in.
        csrf.exempt(rq_dashboard.blueprint)

    from rq.exceptions import NoSuchJobError
    from werkzeug.exceptions import NotFound

    def _rq_dashboard_not_found(e: Exception):
        # rq-dashboard fetches the job or Redis instance of a URL without catching these: a job
        # id that is gone (finished and expired) or mistyped, or an instance number past the list
        # (LookupError), is a 404 there, not a 500. Elsewhere they stay what they are.
        if request.blueprint != "rq_dashboard":
            raise e
        return app.handle_http_exception(NotFound(f"not found in rq-dashboard: {e}"))

    app.register_error_handler(NoSuchJobError, _rq_dashboard_not_found)
    app.register_error_handler(LookupError, _rq_dashboard_not_found)

    @app.before_request
    def _rq_dashboard_admins_only():
        if request.blueprint != "rq_dashboard":
            return None
        from flask_login import current_user

        if not current_user.is_authenticated:
            return app.login_manager.unauthorized()
        if not current_user.is_admin:
            abort(403, "admins only")
        if request.endpoint in RQ_DASHBOARD_ACTIONS and request.method != "POST":
            abort(405, "this action takes POST only")
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            origin = request.headers.get("Origin") or request.headers.get("Referer") or ""
            if urlsplit(origin).netloc != request.host:
                abort(403, "cross-origin request refused")
        if request.endpoint == "rq_dashboard.compact_queue":
            # RQ's compact renames the queue's list, which Redis refuses for a list that does not
            # exist (an empty queue): nothing to compact is not an error.
            from rq import Queue

            name = (request.view_args or {}).get("queue_name", "")
            if not app.extensions["verity.redis"].exists(Queue(name, connection=app.extensions["verity.redis"]).key):
                return jsonify(status="OK", compacted=0)
        return None
