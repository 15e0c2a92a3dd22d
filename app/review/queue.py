"""The review queue: ordering, filters, counts, and claims.

Every state change is one conditional UPDATE (`... WHERE state/claimed_by still match`) whose
row count says who won, so two moderators can never hold or decide the same item, whatever the
interleaving of their requests and on SQLite as on PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.orm import Session

from core import defaults
from core.lifecycle import audit
from core.models import Analysis, ReviewItem, ReviewState, Status, Upload, utcnow

OPEN, CLAIMED, DECIDED = ReviewState.OPEN, ReviewState.CLAIMED, ReviewState.DECIDED
ESCALATED = "escalated"
"""Not a stored state: an open item whose upload a moderator called inconclusive; admins only."""

VIEW_STATES = ("waiting", OPEN, CLAIMED, ESCALATED, DECIDED, "all")


def aware(dt: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; they were stored in UTC."""
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt


def latest_analysis_id():
    return (select(func.max(Analysis.id)).where(Analysis.upload_id == ReviewItem.upload_id)
            .correlate(ReviewItem).scalar_subquery())


def _claimable(now: datetime, username: str | None = None):
    """Open, or claimed with the claim run out (or already ours)."""
    lapsed = and_(ReviewItem.state == CLAIMED, ReviewItem.claimed_until < now)
    if username:
        lapsed = or_(lapsed, and_(ReviewItem.state == CLAIMED, ReviewItem.claimed_by == username))
    return or_(ReviewItem.state == OPEN, lapsed)


def _not_escalated():
    return ReviewItem.upload_id.in_(select(Upload.id).where(Upload.status != Status.INCONCLUSIVE))


def ordering(now: datetime) -> list[Any]:
    """Overdue first, then priority (reason), then score, then the oldest deadline."""
    overdue = case((and_(ReviewItem.due_at.is_not(None), ReviewItem.due_at < now), 1), else_=0)
    return [overdue.desc(), ReviewItem.priority.desc(), func.coalesce(Analysis.score, -1.0).desc(),
            func.coalesce(ReviewItem.due_at, ReviewItem.created_at).asc(), ReviewItem.id.asc()]


@dataclass
class Filters:
    state: str = "waiting"
    label: str | None = None
    kind: str | None = None
    status: str | None = None
    overdue: bool = False

    @classmethod
    def from_args(cls, args) -> Filters:
        state = args.get("state") or "waiting"
        return cls(state=state if state in VIEW_STATES else "waiting", label=args.get("label") or None,
                   kind=args.get("kind") or None, status=args.get("status") or None,
                   overdue=args.get("overdue") in ("1", "on", "true"))

    def as_args(self) -> dict[str, str]:
        d = {"state": self.state, "label": self.label, "kind": self.kind, "status": self.status,
             "overdue": "1" if self.overdue else None}
        return {k: v for k, v in d.items() if v}


def _base_query():
    return (select(ReviewItem, Upload, Analysis)
            .join(Upload, Upload.id == ReviewItem.upload_id)
            .outerjoin(Analysis, Analysis.id == latest_analysis_id()))


def _state_clause(state: str, now: datetime):
    active_claim = and_(ReviewItem.state == CLAIMED, ReviewItem.claimed_until >= now)
    escalated = and_(ReviewItem.state != DECIDED, Upload.status == Status.INCONCLUSIVE)
    if state == "waiting":
        return ReviewItem.state != DECIDED
    if state == OPEN:
        return and_(_claimable(now), Upload.status != Status.INCONCLUSIVE)
    if state == CLAIMED:
        return active_claim
    if state == ESCALATED:
        return escalated
    if state == DECIDED:
        return ReviewItem.state == DECIDED
    return None


def list_items(session: Session, f: Filters, *, now: datetime | None = None, limit: int = defaults.REVIEW_PAGE_SIZE,
               offset: int = 0) -> list[tuple[ReviewItem, Upload, Analysis | None]]:
    now = now or utcnow()
    q = _base_query()
    if (c := _state_clause(f.state, now)) is not None:
        q = q.where(c)
    if f.label:
        q = q.where(Analysis.label == f.label)
    if f.kind:
        q = q.where(Upload.kind == f.kind)
    if f.status:
        q = q.where(Upload.status == f.status)
    if f.overdue:
        q = q.where(ReviewItem.state != DECIDED, ReviewItem.due_at < now)
    if f.state == DECIDED:
        q = q.order_by(ReviewItem.updated_at.desc(), ReviewItem.id.desc())
    else:
        q = q.order_by(*ordering(now))
    return [tuple(r) for r in session.execute(q.limit(limit).offset(offset))]


def counts(session: Session, now: datetime | None = None) -> dict[str, int]:
    now = now or utcnow()
    out = {}
    for state in (OPEN, CLAIMED, ESCALATED, DECIDED):
        q = select(func.count()).select_from(ReviewItem).join(Upload, Upload.id == ReviewItem.upload_id)
        out[state] = session.scalar(q.where(_state_clause(state, now))) or 0
    out["overdue"] = session.scalar(select(func.count()).select_from(ReviewItem).where(
        ReviewItem.state != DECIDED, ReviewItem.due_at < now)) or 0
    out["waiting"] = out[OPEN] + out[CLAIMED] + out[ESCALATED]
    return out


def view_state(item: ReviewItem, upload: Upload, now: datetime | None = None) -> str:
    now = now or utcnow()
    if item.state == DECIDED:
        return DECIDED
    if upload.status == Status.INCONCLUSIVE:
        return ESCALATED if not (item.state == CLAIMED and aware(item.claimed_until) >= now) else CLAIMED
    if item.state == CLAIMED and aware(item.claimed_until) >= now:
        return CLAIMED
    return OPEN


def is_overdue(item: ReviewItem, now: datetime | None = None) -> bool:
    now = now or utcnow()
    return item.state != DECIDED and item.due_at is not None and aware(item.due_at) < now


# --- claims ---------------------------------------------------------------------------------

def claim_seconds(app_config) -> int:
    return int(app_config.get("REVIEW_CLAIM_SECONDS", defaults.REVIEW_CLAIM_SECONDS))


def claim(session: Session, item_id: int, user, *, seconds: int, now: datetime | None = None) -> bool:
    """Claim one item for `user`; False when someone else holds it, it is decided, or it is an
    escalated item and the user is not an admin."""
    now = now or utcnow()
    cond = [ReviewItem.id == item_id, _claimable(now, user.username)]
    if not user.is_admin:
        cond.append(_not_escalated())
    res = session.execute(
        update(ReviewItem).where(*cond)
        .values(state=CLAIMED, claimed_by=user.username, claimed_until=now + timedelta(seconds=seconds),
                updated_at=now)
        .execution_options(synchronize_session=False))
    won = res.rowcount == 1
    if won:
        item = session.get(ReviewItem, item_id)
        audit(session, "review.claimed", user.actor, upload_id=item.upload_id,
                  detail={"review_item_id": item_id, "until": (now + timedelta(seconds=seconds)).isoformat()})
    session.commit()
    return won


def claim_next(session: Session, user, *, seconds: int, now: datetime | None = None,
               attempts: int = 5, exclude: int | None = None) -> int | None:
    """Claim the top claimable item in one conditional UPDATE (PostgreSQL: the candidate row is
    picked with FOR UPDATE SKIP LOCKED, so concurrent callers take different items)."""
    now = now or utcnow()
    pg = session.get_bind().dialect.name == "postgresql"
    for _ in range(attempts):
        pick = (select(ReviewItem.id)
                .join(Upload, Upload.id == ReviewItem.upload_id)
                .outerjoin(Analysis, Analysis.id == latest_analysis_id())
                .where(_claimable(now))
                .order_by(*ordering(now)).limit(1)
                .correlate(None))  # its own review_items, not the UPDATE's target
        if not user.is_admin:
            pick = pick.where(Upload.status != Status.INCONCLUSIVE)
        if exclude is not None:  # "skip": the item just handed back is not handed out again at once
            pick = pick.where(ReviewItem.id != exclude)
        if pg:
            pick = pick.with_for_update(of=ReviewItem, skip_locked=True)
        stmt = (update(ReviewItem)
                .where(ReviewItem.id == pick.scalar_subquery(), _claimable(now))
                .values(state=CLAIMED, claimed_by=user.username,
                        claimed_until=now + timedelta(seconds=seconds), updated_at=now)
                .returning(ReviewItem.id, ReviewItem.upload_id)
                .execution_options(synchronize_session=False))
        row = session.execute(stmt).first()
        if row is not None:
            audit(session, "review.claimed", user.actor, upload_id=row.upload_id,
                  detail={"review_item_id": row.id, "via": "next"})
            session.commit()
            return row.id
        session.rollback()
        # Nothing claimable, or another moderator took the candidate between pick and update.
        exists = session.scalar(select(func.count()).select_from(ReviewItem).where(_claimable(now)))
        if not exists:
            return None
    return None


def renew(session: Session, item_id: int, user, *, seconds: int, now: datetime | None = None) -> datetime | None:
    """The heartbeat: extend our own claim; None when it is no longer ours."""
    now = now or utcnow()
    until = now + timedelta(seconds=seconds)
    res = session.execute(
        update(ReviewItem)
        .where(ReviewItem.id == item_id, ReviewItem.state == CLAIMED, ReviewItem.claimed_by == user.username)
        .values(claimed_until=until).execution_options(synchronize_session=False))
    session.commit()
    return until if res.rowcount == 1 else None


def release(session: Session, item_id: int, user, *, now: datetime | None = None) -> bool:
    """Give an item back to the queue: its holder may, an admin may release anyone's."""
    now = now or utcnow()
    cond = [ReviewItem.id == item_id, ReviewItem.state == CLAIMED]
    if not user.is_admin:
        cond.append(ReviewItem.claimed_by == user.username)
    item = session.get(ReviewItem, item_id)
    holder = item.claimed_by if item else None
    res = session.execute(update(ReviewItem).where(*cond)
                          .values(state=OPEN, claimed_by=None, claimed_until=None, updated_at=now)
                          .execution_options(synchronize_session=False))
    ok = res.rowcount == 1
    if ok:
        audit(session, "review.released", user.actor, upload_id=item.upload_id,
                  detail={"review_item_id": item_id, "holder": holder})
    session.commit()
    return ok


def reassign(session: Session, item_id: int, admin, to_username: str, *, seconds: int,
             now: datetime | None = None) -> bool:
    now = now or utcnow()
    item = session.get(ReviewItem, item_id)
    if item is None:
        return False
    holder = item.claimed_by
    res = session.execute(
        update(ReviewItem).where(ReviewItem.id == item_id, ReviewItem.state.in_((OPEN, CLAIMED)))
        .values(state=CLAIMED, claimed_by=to_username, claimed_until=now + timedelta(seconds=seconds),
                updated_at=now)
        .execution_options(synchronize_session=False))
    ok = res.rowcount == 1
    if ok:
        audit(session, "review.reassigned", admin.actor, upload_id=item.upload_id,
                  detail={"review_item_id": item_id, "from": holder, "to": to_username})
    session.commit()
    return ok
