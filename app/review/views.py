"""Routes of the review UI (/review): queue, evidence, claims, decisions, audit, admin pages."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_login import current_user, login_required
from sqlalchemy import func, select

from app.auth import role_required
from app.db import get_lifecycle, get_session
from app.review import evidence, queue, stats
from core import defaults, lifecycle, overrides
from core.lifecycle import Conflict
from core.models import Analysis, AuditEvent, BankEntry, Decision, ReviewItem, Status, Upload, User
from core.settings import STATUSES_ROUTABLE, SettingsError
from core.storage import BlobNotFound

bp = Blueprint("review", __name__, url_prefix="/review", template_folder="templates",
               static_folder="static", static_url_path="/static")

LABELS = ("suspected_fake", "declared_synthetic", "likely_authentic", "no_face", "unreadable")
BODY_TAG = re.compile(rb"<body[^>]*>", re.IGNORECASE)


@bp.after_app_request
def _rq_dashboard_back_bar(resp: Response) -> Response:
    """rq-dashboard's pages (/admin/rq, "Jobs" in the bar) have no way back: put Verity's bar
    (templates/review/_rq_back.html) right after their <body>. Its JSON, static files,
    redirects and errors pass untouched."""
    if (request.blueprint != "rq_dashboard" or resp.status_code != 200 or resp.mimetype != "text/html"
            or resp.direct_passthrough or resp.is_streamed):
        return resp
    html = resp.get_data()
    m = BODY_TAG.search(html)
    if m is not None:
        resp.set_data(html[:m.end()] + render_template("review/_rq_back.html").encode() + html[m.end():])
    return resp


def _claim_seconds() -> int:
    return queue.claim_seconds(current_app.config)


def _item_or_404(item_id: int) -> ReviewItem:
    item = get_session().get(ReviewItem, item_id)
    if item is None:
        abort(404, f"no review item {item_id}")
    return item


def _wants_json() -> bool:
    return request.accept_mimetypes.best == "application/json"


@bp.get("/", endpoint="queue")
@login_required
def queue_page():
    s = get_session()
    f = queue.Filters.from_args(request.args)
    page = max(1, request.args.get("page", 1, type=int) or 1)
    per = defaults.REVIEW_PAGE_SIZE
    rows = queue.list_items(s, f, limit=per + 1, offset=(page - 1) * per)
    now = queue.utcnow()
    items = [{"item": i, "upload": u, "analysis": a, "state": queue.view_state(i, u, now),
              "overdue": queue.is_overdue(i, now), "due": queue.aware(i.due_at),
              "age": (now - queue.aware(i.created_at)).total_seconds(),
              "claimed_until": queue.aware(i.claimed_until)} for i, u, a in rows[:per]]
    return render_template("review/queue.html", items=items, filters=f, counts=queue.counts(s, now),
                           page=page, has_more=len(rows) > per, labels=LABELS, now=now,
                           statuses=(Status.IN_REVIEW, Status.BLOCKED, Status.INCONCLUSIVE,
                                     Status.CONFIRMED_FAKE, Status.AUTHENTIC))


@bp.post("/next")
@login_required
def next_item():
    s = get_session()
    current = request.form.get("current", type=int)
    if current:
        queue.release(s, current, current_user)
    item_id = queue.claim_next(s, current_user, seconds=_claim_seconds(), exclude=current or None)
    if _wants_json():
        return jsonify({"item_id": item_id, "url": url_for("review.item", item_id=item_id) if item_id else None})
    if item_id is None:
        return redirect(url_for("review.queue", empty=1))
    return redirect(url_for("review.item", item_id=item_id))


@bp.post("/items/<int:item_id>/claim")
@login_required
def claim(item_id: int):
    _item_or_404(item_id)
    ok = queue.claim(get_session(), item_id, current_user, seconds=_claim_seconds())
    if _wants_json():
        return jsonify({"claimed": ok}), (200 if ok else 409)
    return redirect(url_for("review.item", item_id=item_id, **({} if ok else {"taken": 1})))


@bp.post("/items/<int:item_id>/heartbeat")
@login_required
def heartbeat(item_id: int):
    until = queue.renew(get_session(), item_id, current_user, seconds=_claim_seconds())
    if until is None:
        return jsonify({"claimed": False, "message": "the claim is no longer yours"}), 409
    return jsonify({"claimed": True, "until": until.isoformat()})


@bp.post("/items/<int:item_id>/release")
@login_required
def release(item_id: int):
    _item_or_404(item_id)
    ok = queue.release(get_session(), item_id, current_user)
    if _wants_json():
        return jsonify({"released": ok}), (200 if ok else 409)
    return redirect(url_for("review.queue"))


@bp.post("/items/<int:item_id>/reassign")
@role_required("admin")
def reassign(item_id: int):
    s = get_session()
    _item_or_404(item_id)
    to = (request.form.get("to") or "").strip()
    target = s.scalar(select(User).where(User.username == to, User.active.is_(True)))
    if target is None:
        abort(400, f"no active user {to!r}")
    ok = queue.reassign(s, item_id, current_user, to, seconds=_claim_seconds())
    if not ok:
        abort(409, "the item is decided")
    return redirect(url_for("review.item", item_id=item_id))


@bp.post("/items/<int:item_id>/decide")
@login_required
def decide(item_id: int):
    s = get_session()
    _item_or_404(item_id)
    verdict = request.form.get("verdict", "")
    if verdict not in Status.VERDICTS:
        abort(400, f"verdict must be one of {', '.join(Status.VERDICTS)}")
    try:
        d = get_lifecycle().decide(s, item_id, current_user, verdict, request.form.get("note"))
    except Conflict as e:
        if _wants_json():
            return jsonify({"code": "conflict", "message": str(e)}), 409
        abort(409, str(e))
    if _wants_json():
        return jsonify({"decision_id": d.id, "status": d.after_status})
    if request.form.get("then") == "next":
        nxt = queue.claim_next(s, current_user, seconds=_claim_seconds())
        if nxt:
            return redirect(url_for("review.item", item_id=nxt))
    return redirect(url_for("review.queue", decided=item_id))


@bp.post("/uploads/<upload_id>/revise")
@role_required("admin")
def revise(upload_id: str):
    verdict = request.form.get("verdict", "")
    if verdict not in Status.VERDICTS:
        abort(400, f"verdict must be one of {', '.join(Status.VERDICTS)}")
    try:
        get_lifecycle().revise(get_session(), upload_id, current_user, verdict, request.form.get("note"))
    except LookupError:
        abort(404, f"no upload {upload_id}")
    except Conflict as e:
        abort(409, str(e))
    item = get_session().scalar(select(ReviewItem).where(ReviewItem.upload_id == upload_id))
    return redirect(url_for("review.item", item_id=item.id) if item else url_for("review.audit"))


@bp.get("/items/<int:item_id>")
@login_required
def item(item_id: int):
    s = get_session()
    it = _item_or_404(item_id)
    upload = s.get(Upload, it.upload_id)
    analysis = upload.latest_analysis
    now = queue.utcnow()
    state = queue.view_state(it, upload, now)
    mine = it.state == queue.CLAIMED and it.claimed_by == current_user.username
    earlier = s.scalars(select(Upload).where(Upload.sha256 == upload.sha256, Upload.id != upload.id)
                        .order_by(Upload.created_at.desc()).limit(20)).all()
    history = s.scalars(select(Decision).where(Decision.upload_id == upload.id).order_by(Decision.id)).all()
    events = s.scalars(select(AuditEvent).where(AuditEvent.upload_id == upload.id).order_by(AuditEvent.id)).all()
    faces = evidence.top_faces(analysis)
    users = s.scalars(select(User.username).where(User.active.is_(True)).order_by(User.username)).all() \
        if current_user.is_admin else []
    matches = (analysis.evidence or {}).get("matches") or [] if analysis else []
    provenance = (analysis.evidence or {}).get("provenance") if analysis else None
    bank_entries = {e.id: e for e in s.scalars(select(BankEntry).where(
        BankEntry.id.in_([m["entry_id"] for m in matches])))} if matches else {}
    bank_uploads = [e.upload_id for e in bank_entries.values() if e.upload_id]
    bank_items = dict(s.execute(select(ReviewItem.upload_id, ReviewItem.id).where(
        ReviewItem.upload_id.in_(bank_uploads))).all()) if bank_uploads else {}
    return render_template(
        "review/item.html", matches=matches, provenance=provenance, bank_entries=bank_entries, bank_items=bank_items, it=it, upload=upload, analysis=analysis, state=state, mine=mine,
        overdue=queue.is_overdue(it, now), due=queue.aware(it.due_at), claimed_until=queue.aware(it.claimed_until),
        facts=evidence.file_facts(upload, analysis), timeline=evidence.timeline(analysis),
        overlay=evidence.overlay(analysis), occlusion=evidence.occlusion(analysis, upload), live=evidence.live(analysis), faces=faces,
        earlier=earlier, history=history, events=events,
        users=users, taken=request.args.get("taken"), heartbeat_ms=defaults.REVIEW_HEARTBEAT_SECONDS * 1000,
        can_decide=mine, can_revise=current_user.is_admin and it.state == queue.DECIDED,
        escalated=upload.status == Status.INCONCLUSIVE and it.state != queue.DECIDED)


@bp.get("/media/<upload_id>")
@login_required
def media(upload_id: str):
    upload = get_session().get(Upload, upload_id) if upload_id.isalnum() else None
    if upload is None:
        abort(404, f"no upload {upload_id}")
    settings = current_app.config["VERITY"]
    try:
        path = evidence.blob_path(current_app.extensions["verity.storage"], settings, upload.sha256)
    except BlobNotFound:
        abort(410, "the media is gone: the platform withdrew this upload (its record and analysis stay)")
    mime = upload.mime if upload.mime in evidence.SAFE_TYPES else "application/octet-stream"
    ext = evidence.SAFE_TYPES.get(upload.mime, "bin")
    resp = send_file(path, mimetype=mime, conditional=True, etag=upload.sha256, max_age=0,
                     download_name=f"{upload.id}.{ext}", as_attachment=False)
    resp.headers["Content-Disposition"] = f'inline; filename="{upload.id}.{ext}"'
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    resp.headers["Cache-Control"] = "private, no-store"
    resp.headers["Cross-Origin-Resource-Policy"] = "same-origin"
    return resp


@bp.get("/crops/<int:analysis_id>/<int:rank>.jpg")
@login_required
def crop(analysis_id: int, rank: int):
    s = get_session()
    analysis = s.get(Analysis, analysis_id)
    if analysis is None:
        abort(404)
    faces = evidence.top_faces(analysis)
    if not 0 <= rank < len(faces):
        abort(404)
    settings = current_app.config["VERITY"]
    try:
        evidence.ensure_crops(current_app.extensions["verity.storage"], settings, analysis.upload, analysis, faces)
    except BlobNotFound:
        pass  # withdrawn: only crops cut before stay viewable
    path = evidence.crop_path(settings, analysis, faces[rank])
    if not path.is_file():
        abort(404, "the frame of this face could not be decoded again")
    resp = send_file(path, mimetype="image/jpeg", max_age=0)
    resp.headers["Cache-Control"] = "private, max-age=3600"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


@bp.post("/me/blur")
@login_required
def set_blur():
    s = get_session()
    user = s.get(User, current_user.id)
    user.blur_media = request.form.get("blur") in ("1", "on", "true")
    lifecycle.audit(s, "user.blur_set", user.actor, detail={"blur": user.blur_media})
    s.commit()
    if _wants_json():
        return jsonify({"blur": user.blur_media})
    return redirect(request.referrer if request.referrer and request.referrer.startswith(request.host_url)
                    else url_for("review.queue"))


# --- admin ----------------------------------------------------------------------------------

AUDIT_FIELDS = ("id", "created_at", "actor", "action", "upload_id", "before", "after", "request_id", "detail")


def _audit_query():
    q = select(AuditEvent)
    if v := request.args.get("upload"):
        q = q.where(AuditEvent.upload_id == v)
    if v := request.args.get("actor"):
        q = q.where(AuditEvent.actor.contains(v))
    if v := request.args.get("action"):
        q = q.where(AuditEvent.action.startswith(v))
    return q


def _audit_row(e: AuditEvent) -> dict:
    return {"id": e.id, "created_at": queue.aware(e.created_at).isoformat(), "actor": e.actor, "action": e.action,
            "upload_id": e.upload_id, "before": e.before, "after": e.after, "request_id": e.request_id,
            "detail": e.detail}


@bp.get("/audit")
@role_required("admin")
def audit():
    s = get_session()
    page = max(1, request.args.get("page", 1, type=int) or 1)
    per = defaults.REVIEW_PAGE_SIZE
    rows = s.scalars(_audit_query().order_by(AuditEvent.id.desc()).limit(per + 1).offset((page - 1) * per)).all()
    total = s.scalar(select(func.count()).select_from(_audit_query().subquery()))
    return render_template("review/audit.html", events=rows[:per], page=page, has_more=len(rows) > per,
                           total=total, args={k: v for k, v in request.args.items() if k != "page"})


@bp.get("/audit.csv")
@role_required("admin")
def audit_csv():
    rows = get_session().scalars(_audit_query().order_by(AuditEvent.id)).all()
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(AUDIT_FIELDS)
    for e in rows:
        r = _audit_row(e)
        r["detail"] = json.dumps(r["detail"], sort_keys=True)
        # Spreadsheet formula injection: a cell starting with = + - @ is written as text.
        w.writerow(["'" + str(v) if isinstance(v, str) and v[:1] in "=+-@" else ("" if v is None else v)
                    for v in (r[k] for k in AUDIT_FIELDS)])
    return Response(buf.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="verity-audit-{_stamp()}.csv"'})


@bp.get("/audit.json")
@role_required("admin")
def audit_json():
    rows = get_session().scalars(_audit_query().order_by(AuditEvent.id)).all()
    resp = jsonify({"events": [_audit_row(e) for e in rows], "count": len(rows)})
    resp.headers["Content-Disposition"] = f'attachment; filename="verity-audit-{_stamp()}.json"'
    return resp


def _stamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


@bp.get("/dashboard")
@role_required("admin")
def dashboard():
    s = get_session()
    r = overrides.effective_routing(s, current_app.config["VERITY"])
    return render_template("review/dashboard.html", d=stats.dashboard(s, r.review_threshold, r.block_threshold),
                           routing=r)


@bp.route("/admin/settings", methods=["GET", "POST"], endpoint="settings")
@role_required("admin")
def settings_page():
    s = get_session()
    error, changed = None, None
    if request.method == "POST":
        try:
            changed = overrides.save_overrides(s, overrides.parse_form(request.form), current_user.actor)
        except SettingsError as e:
            error = str(e)
    return render_template("review/settings.html", r=overrides.effective_routing(s, current_app.config["VERITY"]),
                           o=overrides.load_overrides(s), error=error, changed=changed,
                           routable=STATUSES_ROUTABLE), (400 if error else 200)
