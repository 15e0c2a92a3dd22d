"""Verdicts: a moderator decides a claimed item; an admin may revise a verdict later. Each one is a
new Decision row plus an audit event (nothing is updated in place or deleted), the upload's
status follows, and the platform is notified (app/notify.py)."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.models import AuditEvent, Decision, ReviewItem, Status, Upload, utcnow
from app.notify import notify
from app.review.queue import CLAIMED, DECIDED, OPEN

VERDICTS = (Status.CONFIRMED_FAKE, Status.AUTHENTIC, Status.INCONCLUSIVE)
NOTE_MAX = 4000


class Conflict(Exception):
    """The item is not (or no longer) ours to decide: someone else holds it or decided it."""


def _facts(upload: Upload) -> dict:
    a = upload.latest_analysis
    if a is None:
        return {"model_name": None, "model_version": None, "label": None, "score": None}
    return {"model_name": a.model_name, "model_version": a.model_version, "label": a.label, "score": a.score}


def decide(session: Session, item_id: int, user, verdict: str, note: str | None = None) -> Decision:
    """Decide the item `user` holds. A moderator's `inconclusive` escalates: the item goes back to
    the queue for admins only; an admin's verdict is final (it can still be revised)."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}")
    note = (note or "").strip()[:NOTE_MAX] or None
    now = utcnow()
    item = session.get(ReviewItem, item_id)
    if item is None:
        raise LookupError(item_id)
    upload = session.get(Upload, item.upload_id)
    before = upload.status
    escalate = verdict == Status.INCONCLUSIVE and not user.is_admin
    values = ({"state": OPEN, "claimed_by": None, "claimed_until": None, "updated_at": now} if escalate
              else {"state": DECIDED, "claimed_until": None, "updated_at": now})
    won = session.execute(
        update(ReviewItem)
        .where(ReviewItem.id == item_id, ReviewItem.state == CLAIMED, ReviewItem.claimed_by == user.username)
        .values(**values).execution_options(synchronize_session=False)).rowcount == 1
    if won:
        won = session.execute(
            update(Upload).where(Upload.id == upload.id, Upload.status == before)
            .values(status=verdict, updated_at=now).execution_options(synchronize_session=False)).rowcount == 1
    if not won:
        session.rollback()
        raise Conflict(f"review item {item_id} is not claimed by {user.username}")
    facts = _facts(upload)
    d = Decision(upload_id=upload.id, review_item_id=item_id, moderator=user.username, outcome=verdict,
                 note=note, created_at=now, before_status=before, after_status=verdict, **facts)
    session.add(d)
    session.flush()
    session.add(AuditEvent(upload_id=upload.id, actor=user.actor,
                           action="review.escalated" if escalate else "review.decided",
                           before=before, after=verdict, request_id=None, created_at=now,
                           detail={"decision_id": d.id, "review_item_id": item_id, "verdict": verdict,
                                   "note": note, "role": user.role, **facts}))
    session.commit()
    session.refresh(upload)
    notify(upload, verdict)
    return d


def revise(session: Session, upload_id: str, admin, verdict: str, note: str | None = None) -> Decision:
    """An admin's new verdict on an already decided upload; the earlier decision stays."""
    if not admin.is_admin:
        raise PermissionError("only an admin can revise a decision")
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}")
    note = (note or "").strip()[:NOTE_MAX] or None
    now = utcnow()
    upload = session.get(Upload, upload_id)
    if upload is None:
        raise LookupError(upload_id)
    last = session.scalar(select(Decision).where(Decision.upload_id == upload_id)
                          .order_by(Decision.id.desc()).limit(1))
    if last is None:
        raise Conflict("nothing to revise: the upload has no decision yet")
    before = upload.status
    item = session.scalar(select(ReviewItem).where(ReviewItem.upload_id == upload_id))
    if item is not None and item.state != DECIDED:
        raise Conflict("the item is still in the queue: claim and decide it instead")
    won = session.execute(update(Upload).where(Upload.id == upload_id, Upload.status == before)
                          .values(status=verdict, updated_at=now)
                          .execution_options(synchronize_session=False)).rowcount == 1
    if not won:
        session.rollback()
        raise Conflict("the upload changed meanwhile; reload and try again")
    facts = _facts(upload)
    d = Decision(upload_id=upload_id, review_item_id=item.id if item else None, moderator=admin.username,
                 outcome=verdict, note=note, created_at=now, before_status=before, after_status=verdict,
                 revises_id=last.id, **facts)
    session.add(d)
    session.flush()
    session.add(AuditEvent(upload_id=upload_id, actor=admin.actor, action="review.revised", before=before,
                           after=verdict, created_at=now,
                           detail={"decision_id": d.id, "revises": last.id, "verdict": verdict, "note": note,
                                   "role": admin.role, **facts}))
    session.commit()
    session.refresh(upload)
    notify(upload, verdict)
    return d
