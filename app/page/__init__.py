"""The browser upload page `/`: its own CSRF-protected POST and a status route it polls."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, render_template, request, url_for

from app.db import get_lifecycle, get_session
from app.errors import request_id
from core.errors import ApiError
from core.models import Status, Upload
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


@bp.get("/")
def index():
    settings = current_app.config["VERITY"]
    return render_template("index.html", max_bytes=settings.max_upload_bytes,
                           show_score=settings.show_score)


@bp.post("/upload")
def upload():
    f = request.files.get("file")
    if f is None:
        raise ApiError(400, "missing_file", "choose a file first")
    up = get_lifecycle().accept(get_session(), f.stream, f.filename, "page", actor="page",
                                request_id=request_id())
    return jsonify({"id": up.id, "status": up.status,
                    "links": {"status": url_for("page.status", upload_id=up.id)}}), 202


@bp.get("/uploads/<upload_id>/status")
def status(upload_id: str):
    up = get_session().get(Upload, upload_id, options=VIEW_OPTIONS) if upload_id.isalnum() else None
    if up is None:
        raise ApiError(404, "not_found", f"no upload {upload_id}")
    show = current_app.config["VERITY"].show_score
    body = upload_body(up, show_score=show)
    body.pop("sha256", None)
    if body.get("analysis"):
        body["analysis"].pop("timings_ms", None)
        if not show:
            body["analysis"].pop("score", None)
    label = body["analysis"]["label"] if body.get("analysis") else None
    body["terminal"] = up.status not in Status.PENDING
    body["outcome"] = NO_FACE_TEXT if (label == "no_face" and up.status == Status.CLEARED) \
        else OUTCOME_TEXT.get(up.status, up.status)
    return jsonify(body)
