"""The browser upload page `/`: its own CSRF-protected POST and a status route it polls."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, render_template, request, url_for

from app.db import get_lifecycle, get_session
from app.errors import request_id
from app.page import occlusion
from app.page.tokens import PageToken, check_status_capability, read_page_token, status_capability
from core.errors import ApiError
from core.models import ApiClient, Status, Upload
from core.representation import VIEW_OPTIONS, upload_body

bp = Blueprint("page", __name__, template_folder="templates")

ALLOWED_TYPES = ("JPEG", "PNG", "WebP", "GIF", "MP4", "MOV", "WebM", "MKV")
"""What the door accepts (judged from the bytes: core/lifecycle.py, detector/media.py), as the page names them."""

PENDING_TEXT = {Status.QUEUED: "Waiting for a worker", Status.ANALYZING: "Analysing"}
VERDICTS = {
    Status.CLEARED: ("Cleared", "No sign of a manipulated face was found in this file."),
    Status.IN_REVIEW: ("Sent to a human moderator",
                       "The detector could not settle this file on its own, so a moderator will look at it."),
    Status.BLOCKED: ("Blocked", "A face in this file is likely manipulated, so the file was blocked."),
    Status.CONFIRMED_FAKE: ("Confirmed fake",
                            "A moderator looked at this file and confirmed that a face in it is manipulated."),
    Status.AUTHENTIC: ("Judged authentic", "A moderator looked at this file and judged it authentic."),
    Status.INCONCLUSIVE: ("Inconclusive",
                          "A moderator looked at this file and could not decide whether a face in it is manipulated."),
    "withdrawn": ("Withdrawn", "The platform this file came through has withdrawn it."),
}
ROUTED_AFTER = {Status.CLEARED: "", Status.IN_REVIEW: " It was sent to a human moderator.",
                Status.BLOCKED: " Files like this are blocked here."}
"""What happened next to a file the detector could not judge (the operator routes them)."""


def outcome(status: str, label: str | None) -> tuple[str, str]:
    """(title, sentence) in plain words for the person who uploaded: what the status means, and
    for a file with no face or one that could not be read, that nothing was checked (a
    moderator's verdict, when there is one, says more than the label)."""
    if status in PENDING_TEXT:
        return PENDING_TEXT[status], PENDING_TEXT[status]
    if status in ROUTED_AFTER and label == "no_face":
        return "No face found", ("No face was found in this file, so nothing was checked: this is not a "
                                 "judgement that it is authentic." + ROUTED_AFTER[status])
    if status in ROUTED_AFTER and label == "unreadable":
        return "Could not be read", "The file could not be decoded, so nothing was checked." + ROUTED_AFTER[status]
    return VERDICTS.get(status, (status, status))


def size_text(n: int) -> str:
    """A byte count as the page says it: 200 MB, 512 KB, 900 bytes."""
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} bytes"


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


def _render_index(refused: str | None, token: str | None, sign_in: bool):
    settings = current_app.config["VERITY"]
    # Moderators sign in from the page's bar, except on a page only a platform's users reach
    # (VERITY_PAGE_ACCESS=token): signing in would not let its visitors upload.
    return render_template("index.html", max_bytes=settings.max_upload_bytes, limit_text=size_text(
        settings.max_upload_bytes), allowed_types=ALLOWED_TYPES, show_score=settings.show_score,
        refused=refused, token=token, sign_in=sign_in, moderator_sign_in=settings.page_access != "token")


@bp.get("/")
def index():
    settings = current_app.config["VERITY"]
    token = _page_token()
    if not _may_upload(token):
        need = "a link from the platform you came from" if settings.page_access == "token" else \
            "signing in (or a link from the platform you came from)"
        return _render_index(f"Uploading here needs {need}.", None, settings.page_access == "users"), 403
    return _render_index(None, request.values.get("token") if token else None, False)


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
    carries, never for an upload that came through the API, never the platform's fields. A
    video checked for a hand passing over the face also gets `occlusion` (app/page/occlusion.py)."""
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
    a = up.latest_analysis
    occ = occlusion.summary(a.evidence, show_score=show) if a is not None and up.kind == "video" else None
    if occ is not None:  # a video analysed with the hand-over-face check
        body["occlusion"] = occ
    body["terminal"] = up.status not in Status.PENDING
    body["outcome_title"], body["outcome"] = outcome(up.status, label)
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
