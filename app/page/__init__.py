"""The browser upload page `/`: its own CSRF-protected POST and a status route it polls."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, render_template, request, url_for

from app.db import get_lifecycle, get_session
from app.errors import request_id
from app.page.tokens import PageToken, check_status_capability, read_page_token, status_capability
from core.errors import ApiError
from core.models import ApiClient, Status, Upload
from core.representation import VIEW_OPTIONS, upload_body

bp = Blueprint("page", __name__, template_folder="templates")

OUTCOME_TEXT = {
    Status.QUEUED: "Waiting for a worker",
    Status.ANALYZING: "Analysing",
    Status.CLEARED: "Cleared: no sign of a manipulated face",
    Status.IN_REVIEW: "Sent to a human moderator for review",
    Status.BLOCKED: "Blocked: a manipulated face is likely",
    Status.CONFIRMED_FAKE: "Confirmed as manipulated by a moderator",
    Status.AUTHENTIC: "Judged authentic by a moderator",
    Status.INCONCLUSIVE: "A moderator could not decide",
}
NO_FACE_TEXT = "Cleared: no face was found, so there was nothing to check (not a judgement of authenticity)"


def _page_token() -> PageToken | None:
    """A platform's page token from the query (GET) or the form (POST), when valid and its key active."""
    raw = request.values.get("token") or request.headers.get("X-Verity-Page-Token") or ""
    tok = read_page_token(current_app.config["VERITY"].secret_key, raw)
    if tok is None:
        return None
    client = get_session().get(ApiClient, tok.client_id)
    return tok if client is not None and client.revoked_at is None else None


def _signed_in() -> bool:
    from flask_login import current_user

    return bool(current_user.is_authenticated)


def _may_upload(token: PageToken | None) -> bool:
    access = current_app.config["VERITY"].page_access
    return token is not None or access == "open" or (access == "users" and _signed_in())


@bp.get("/")
def index():
    settings = current_app.config["VERITY"]
    token = _page_token()
    if not _may_upload(token):
        need = "a link from the platform you came from" if settings.page_access == "token" else \
            "signing in (or a link from the platform you came from)"
        return render_template("index.html", max_bytes=settings.max_upload_bytes, show_score=settings.show_score,
                               refused=f"Uploading here needs {need}.", token=None,
                               sign_in=settings.page_access == "users"), 403
    return render_template("index.html", max_bytes=settings.max_upload_bytes, show_score=settings.show_score,
                           refused=None, token=request.values.get("token") if token else None, sign_in=False)


def upload():
    """POST /upload (rate-limited per client address in init_app)."""
    settings = current_app.config["VERITY"]
    token = _page_token()
    if not _may_upload(token):
        raise ApiError(403, "forbidden", "this upload page needs a sign-in or a platform's page token")
    f = request.files.get("file")
    if f is None:
        raise ApiError(400, "missing_file", "choose a file first")
    kw: dict = {"request_id": request_id()}
    if token is not None:
        client = get_session().get(ApiClient, token.client_id)
        kw.update(actor=f"page:{client.name}", client_id=client.id,
                  metadata={"page_user": token.subject} if token.subject else None)
    elif _signed_in():
        from flask_login import current_user

        kw.update(actor=current_user.actor)
    else:
        kw.update(actor="page", anonymous=True)
    up = get_lifecycle().accept(get_session(), f.stream, f.filename, "page", **kw)
    cap = status_capability(settings.secret_key, up.id)
    return jsonify({"id": up.id, "status": up.status,
                    "links": {"status": url_for("page.status", upload_id=up.id, cap=cap)}}), 202


@bp.get("/uploads/<upload_id>/status")
def status(upload_id: str):
    """The uploading browser's view of its upload: only with the capability its status link
    carries, never for an upload that came through the API, never the platform's fields."""
    settings = current_app.config["VERITY"]
    up = None
    if upload_id.isalnum() and check_status_capability(settings.secret_key, upload_id, request.args.get("cap")):
        up = get_session().get(Upload, upload_id, options=VIEW_OPTIONS)
    if up is None or up.source != "page":
        raise ApiError(404, "not_found", f"no upload {upload_id} for this link")
    show = settings.show_score
    body = upload_body(up, show_score=show)
    for field in ("sha256", "external_id", "metadata"):
        body.pop(field, None)
    if body.get("analysis"):
        body["analysis"].pop("timings_ms", None)
        if not show:
            body["analysis"].pop("score", None)
    label = body["analysis"]["label"] if body.get("analysis") else None
    body["terminal"] = up.status not in Status.PENDING
    body["outcome"] = NO_FACE_TEXT if (label == "no_face" and up.status == Status.CLEARED) \
        else OUTCOME_TEXT.get(up.status, up.status)
    return jsonify(body)


def init_app(app) -> None:
    """The page's blueprint, and its limits per client address: uploads per minute and per day,
    and bytes per day (the request's Content-Length counts, so one large file costs its size)."""
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address

    settings = app.config["VERITY"]
    app.register_blueprint(bp)
    app.add_url_rule("/upload", "page.upload", upload, methods=["POST"])
    limiter = Limiter(key_func=get_remote_address, storage_uri=settings.require_redis_url(),
                      key_prefix="verity-page", strategy="fixed-window", headers_enabled=False)
    limiter.init_app(app)
    app.extensions["verity.page_limiter"] = limiter
    message = "too many uploads from your address; try again later"
    view = limiter.limit(settings.page_rate_limit, error_message=message)(upload)
    view = limiter.limit(f"{settings.page_max_bytes_per_day}/day", error_message=message,
                         cost=lambda: max(1, request.content_length or 0))(view)
    app.view_functions["page.upload"] = view
