"""The reconciler: uploads stuck in queued/analyzing with no live RQ job are enqueued again.

The DB is the record and Redis only a queue, so anything Redis forgets (a flushed or restarted
Redis without AOF, an enqueue that failed after the commit, a job record that expired) is found
here. It runs inside the workers' maintenance loop (at most once per interval across all of
them, behind a Redis lock) and from `verity reconcile`.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from redis import Redis
from sqlalchemy import select

from core.db import Database
from core.lifecycle import Lifecycle
from core.models import Status, Upload, utcnow
from core.queue import live_job_status
from core.settings import Settings

log = logging.getLogger(__name__)

LOCK_KEY = "verity:reconciler:lock"
BATCH = 500


def reconcile(settings: Settings, db: Database, lifecycle: Lifecycle, connection: Redis, *,
              stuck_after: int | None = None) -> list[str]:
    """Re-enqueue overdue pending uploads that have no live job; returns their ids."""
    age = settings.stuck_after if stuck_after is None else stuck_after
    cutoff = utcnow() - timedelta(seconds=age)
    requeued: list[str] = []
    with db.session() as session:
        rows = session.scalars(
            select(Upload).where(Upload.status.in_(Status.PENDING), Upload.updated_at <= cutoff)
            .order_by(Upload.updated_at).limit(BATCH)).all()
        for upload in rows:
            if live_job_status(connection, upload.id) is not None:
                continue
            if lifecycle.requeue(session, upload, f"{upload.status} for over {age}s with no live job"):
                requeued.append(upload.id)
    if requeued:
        log.warning("reconciler re-enqueued %d stuck upload(s): %s", len(requeued), ", ".join(requeued[:20]))
    return requeued


def reconcile_if_due(settings: Settings, db: Database, lifecycle: Lifecycle,
                     connection: Redis) -> list[str] | None:
    """Run at most once per reconcile interval across all workers (a Redis lock that expires)."""
    if not connection.set(LOCK_KEY, "1", nx=True, ex=settings.reconcile_interval):
        return None
    return reconcile(settings, db, lifecycle, connection)
