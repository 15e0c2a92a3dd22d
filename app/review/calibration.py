"""The calibration view for admins (/review/admin/calibration): the model's scores against the
moderators' verdicts (a reliability diagram), the thresholds that would give a chosen precision
or review load, and an action that applies them as the admin's routing settings (audited) and
one that undoes the last application (audited too)."""

from __future__ import annotations

from flask import abort, current_app, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from app.auth import role_required
from app.db import get_session
from app.review.views import bp
from core import calibration, overrides
from core.lifecycle import audit
from core.models import AuditEvent
from core.settings import SettingsError, parse_float

DEFAULT_PRECISION = 0.9
DEFAULT_LOAD = 0.05
APPLIED, UNDONE = "calibration.applied", "calibration.undone"


def _arg(name: str, default: float, lo: float, hi: float) -> float:
    raw = request.values.get(name)
    if raw in (None, ""):
        return default
    try:
        return parse_float(name, raw, lo, hi)
    except SettingsError as e:
        abort(400, str(e))


def _last_application(s):
    """The latest calibration.applied event that no calibration.undone answers, or None."""
    for ev in s.scalars(select(AuditEvent).where(AuditEvent.action.in_((APPLIED, UNDONE)))
                        .order_by(AuditEvent.id.desc()).limit(50)):
        if ev.action == UNDONE:
            return None
        return ev
    return None


@bp.get("/admin/calibration", endpoint="calibration")
@role_required("admin")
def calibration_page():
    s = get_session()
    precision = _arg("precision", DEFAULT_PRECISION, 0.5, 1.0)
    load = _arg("load", DEFAULT_LOAD, 0.001, 0.5)
    scores, fakes = calibration.labelled_scores(s)
    everything = calibration.analysed_scores(s)
    block = calibration.threshold_for_precision(scores, fakes, precision)
    review = calibration.threshold_for_load(everything, load)
    routing = overrides.effective_routing(s, current_app.config["VERITY"])
    return render_template("review/calibration.html", bins=calibration.reliability(scores, fakes),
                           n_verdicts=len(scores), n_fakes=int(fakes.sum()), n_analyses=len(everything),
                           precision=precision, load=load, block=block, review=review, routing=routing,
                           min_support=calibration.MIN_SUPPORT, last=_last_application(s),
                           applied=request.args.get("applied"), undone=request.args.get("undone"))


@bp.post("/admin/calibration/apply", endpoint="calibration_apply")
@role_required("admin")
def calibration_apply():
    s = get_session()
    try:
        review = parse_float("review_threshold", request.form.get("review_threshold", ""), 0.0, 1.0)
        block = parse_float("block_threshold", request.form.get("block_threshold", ""), 0.0, 1.0)
    except SettingsError as e:
        abort(400, str(e))
    if block < review:
        abort(400, "the block threshold must be >= the review threshold")
    before = overrides.load_overrides(s)
    prev = {k: before.get(k) for k in ("review_threshold", "block_threshold")}
    changed = overrides.save_overrides(s, {"review_threshold": review, "block_threshold": block}, current_user.actor)
    if changed:
        audit(s, APPLIED, current_user.actor,
              detail={"before": prev, "after": {"review_threshold": review, "block_threshold": block},
                      "precision": request.form.get("precision"), "load": request.form.get("load")})
        s.commit()
    return redirect(url_for("review.calibration", applied=1))


@bp.post("/admin/calibration/undo", endpoint="calibration_undo")
@role_required("admin")
def calibration_undo():
    s = get_session()
    last = _last_application(s)
    if last is None:
        abort(409, "no calibration to undo")
    overrides.save_overrides(s, dict(last.detail["before"]), current_user.actor)
    audit(s, UNDONE, current_user.actor, detail={"applied_event": last.id, "restored": last.detail["before"]})
    s.commit()
    return redirect(url_for("review.calibration", undone=1))
