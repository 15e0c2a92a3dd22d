"""Numbers for operators: the queue's state and how often moderators agree with the detector."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.review.queue import DECIDED, aware, counts
from core.models import Analysis, Decision, ReviewItem, Status, utcnow

WINDOW_HOURS = 24
RECENT_DECISIONS = 5000


def rate_text(count: int, hours: float) -> str:
    """`count` events over `hours` as a per-hour figure precise enough to agree with the count:
    1 in 24 h is 0.042, not 0.0 (two significant figures below 1, one decimal above)."""
    rate = count / hours
    if rate == 0:
        return "0"
    return f"{rate:.2g}" if rate < 1 else f"{rate:.1f}"


def dashboard(session: Session, review_threshold: float, block_threshold: float) -> dict[str, Any]:
    now = utcnow()
    c = counts(session, now)
    oldest = aware(session.scalar(select(func.min(ReviewItem.created_at)).where(ReviewItem.state != DECIDED)))
    since = now - timedelta(hours=WINDOW_HOURS)
    recent = [aware(t) for t in session.scalars(select(Decision.created_at).where(Decision.created_at >= since))]
    per_hour = [0] * WINDOW_HOURS
    for t in recent:
        h = int((now - t).total_seconds() // 3600)
        if 0 <= h < WINDOW_HOURS:
            per_hour[WINDOW_HOURS - 1 - h] += 1

    # The latest verdict per upload, against the score of the analysis the moderator saw.
    latest = (select(Decision.upload_id, func.max(Decision.id).label("id")).group_by(Decision.upload_id)
              .subquery())
    rows = session.execute(
        select(Decision.outcome, Decision.score, Decision.label)
        .join(latest, latest.c.id == Decision.id)
        .order_by(Decision.id.desc()).limit(RECENT_DECISIONS)).all()
    flagged = [o for o, s, _ in rows if s is not None and s >= review_threshold
               and o in (Status.CONFIRMED_FAKE, Status.AUTHENTIC)]
    blocked = [o for o, s, _ in rows if s is not None and s >= block_threshold
               and o in (Status.CONFIRMED_FAKE, Status.AUTHENTIC)]
    labelled = [o for o, _, lab in rows if lab == "suspected_fake" and o in (Status.CONFIRMED_FAKE, Status.AUTHENTIC)]

    def share(xs: list[str], what: str) -> float | None:
        return (sum(1 for x in xs if x == what) / len(xs)) if xs else None

    return {
        "counts": c,
        "oldest_waiting_seconds": (now - oldest).total_seconds() if oldest else None,
        "decisions_24h": len(recent),
        "decisions_per_hour": len(recent) / WINDOW_HOURS,
        "decisions_per_hour_text": rate_text(len(recent), WINDOW_HOURS),
        "window_hours": WINDOW_HOURS,
        "per_hour": per_hour,
        "precision_flagged": share(flagged, Status.CONFIRMED_FAKE),
        "precision_flagged_n": len(flagged),
        "precision_label": share(labelled, Status.CONFIRMED_FAKE),
        "precision_label_n": len(labelled),
        "authentic_among_blocked": share(blocked, Status.AUTHENTIC),
        "authentic_among_blocked_n": len(blocked),
        "inconclusive_total": session.scalar(select(func.count()).select_from(Decision)
                                             .where(Decision.outcome == Status.INCONCLUSIVE)) or 0,
        "analyses_total": session.scalar(select(func.count()).select_from(Analysis)) or 0,
    }
