"""Live segments on the detector workers: the job, its failure callback, and the live reconciler.

A segment is a short chunk of a call (a video chunk, or JPEG frames). The worker runs the
detector on it with the occlusion check, stores the answer through core/live.py (which updates
the session's rolling verdict and hands a suspected session to review), and wakes the API
request that waits for the answer.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

import numpy as np
from sqlalchemy import select

from core import defaults, metrics
from core.models import LiveSegment, SegmentState, utcnow
from core.queue import enqueue_segment, live_job_status, segment_job_id
from detector import media
from workers.context import WorkerContext, get_context
from workers.jobs import job_actor

log = logging.getLogger(__name__)

LOCK_KEY = "verity:live:reconciler:lock"
STUCK_AFTER_SECONDS = 30
"""A segment queued for longer than this with no live job is enqueued again."""


def analyze_segment(segment_id: str) -> dict[str, Any]:
    ctx = get_context()
    t0 = time.perf_counter()
    with ctx.db.session() as session:
        segment = session.get(LiveSegment, segment_id)
        if segment is None:
            return {"segment_id": segment_id, "skipped": "no such segment"}
        if segment.state != SegmentState.QUEUED:
            return {"segment_id": segment_id, "skipped": f"already {segment.state}"}
        detector = ctx.detector()
        result = _detect(ctx, detector, segment)
        seg = ctx.live.analysed(session, segment_id, result.to_dict(), job_actor(), detector.manifest.thresholds)
        metrics.JOB_SECONDS.labels(outcome="live").observe(time.perf_counter() - t0)
        return {"segment_id": segment_id, "state": seg.state if seg else None, "score": result.score,
                "label": str(result.label)}


def _detect(ctx: WorkerContext, detector, segment: LiveSegment):
    """The detector on a segment, with the live budget: LIVE_SEGMENT_FRAMES sampled (more for the
    occlusion check), LIVE_CLASSIFY_FRAMES of them classified."""
    frames = min(detector.frames, defaults.LIVE_SEGMENT_FRAMES)
    if segment.kind == "video":
        with ctx.storage.local_path(segment.sha256, ctx.settings.tmp_dir) as path:
            return detector.analyze_path(path, frames=frames, classify=defaults.LIVE_CLASSIFY_FRAMES)
    images = []
    for f in segment.frames or []:
        with ctx.storage.local_path(f["sha256"], ctx.settings.tmp_dir) as path:
            images.append((float(f["t"]), _rgb(path)))
    return detector.analyze_frames(images, classify=defaults.LIVE_CLASSIFY_FRAMES)


def _rgb(path) -> np.ndarray:
    rgb, _ = media.load_image(path)  # checked at the door; an error here fails the job (and the segment)
    return rgb


def on_segment_failure(job, connection, exc_type, exc_value, tb) -> None:
    """After the last attempt, the segment is marked failed (the session goes on; GET shows it)."""
    if job.retries_left:
        return
    segment_id = job.args[0] if job.args else job.id.removeprefix("live-")
    ctx = get_context()
    with ctx.db.session() as session:
        ctx.live.failed(session, segment_id, f"{getattr(exc_type, '__name__', exc_type)}: {exc_value}")


def reconcile_live(ctx: WorkerContext, connection) -> dict[str, list[str]]:
    """Queued segments Redis forgot go back on the live queue; overdue sessions end."""
    cutoff = utcnow() - timedelta(seconds=STUCK_AFTER_SECONDS)
    requeued: list[str] = []
    with ctx.db.session() as session:
        rows = session.scalars(select(LiveSegment.id).where(LiveSegment.state == SegmentState.QUEUED,
                                                            LiveSegment.received_at <= cutoff).limit(500)).all()
        for sid in rows:
            if live_job_status(connection, segment_job_id(sid)) is None:
                enqueue_segment(ctx.settings, connection, sid)
                requeued.append(sid)
        ended = ctx.live.expire_due(session)
    if requeued or ended:
        log.warning("live reconciler: %d segment(s) re-enqueued, %d session(s) ended", len(requeued), len(ended))
    return {"requeued": requeued, "ended": ended}


def reconcile_live_if_due(ctx: WorkerContext, connection) -> dict[str, list[str]] | None:
    if not connection.set(LOCK_KEY, "1", nx=True, ex=max(5, min(ctx.settings.reconcile_interval, 30))):
        return None
    return reconcile_live(ctx, connection)
