"""The known-fakes bank page for admins (/review/admin/bank): list, search by id or note, and
remove an entry (audited; the row stays). Entries come from moderators' confirmed-fake
decisions, `verity bank add` and `verity bank import` (core/bank.py)."""

from __future__ import annotations

from flask import abort, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, select

from app.auth import role_required
from app.db import get_session
from app.errors import request_id
from app.review.views import bp
from core import defaults
from core.bank import BankError, find_entries, remove_entry
from core.models import BankEntry, ReviewItem


@bp.get("/admin/bank", endpoint="bank")
@role_required("admin")
def bank_page():
    s = get_session()
    q = (request.args.get("q") or "").strip()[:200] or None
    removed = request.args.get("removed") in ("1", "on", "true")
    page = max(1, request.args.get("page", 1, type=int) or 1)
    per = defaults.REVIEW_PAGE_SIZE
    rows = find_entries(s, q, include_removed=removed, limit=per + 1, offset=(page - 1) * per)
    items = dict(s.execute(select(ReviewItem.upload_id, ReviewItem.id).where(
        ReviewItem.upload_id.in_([e.upload_id for e in rows if e.upload_id]))).all())
    active = s.scalar(select(func.count()).select_from(BankEntry).where(BankEntry.removed_at.is_(None)))
    return render_template("review/bank.html", entries=rows[:per], has_more=len(rows) > per, page=page, q=q or "",
                           removed=removed, items=items, active=active, removed_now=request.args.get("gone"))


@bp.post("/admin/bank/<entry_id>/remove", endpoint="bank_remove")
@role_required("admin")
def bank_remove(entry_id: str):
    s = get_session()
    reason = (request.form.get("reason") or "").strip()[:500] or "removed on the bank page"
    try:
        remove_entry(s, entry_id, current_user.actor, reason, request_id=request_id())
    except BankError:
        abort(404, f"no bank entry {entry_id}")
    s.commit()
    return redirect(url_for("review.bank", gone=entry_id))
