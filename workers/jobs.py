"""RQ job functions. A job carries only the upload id; everything else is read from the DB and
the blob store, and every write is idempotent, so a retry or a second delivery is harmless."""

from __future__ import annotations

import logging
import os
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import metrics
from app.models import Analysis, AuditEvent, ReviewItem, Status, Upload, utcnow
from app.notify import notify
from app.policy import Routing, Thresholds, failed_routing, route
from app.review.overrides import effective_settings, review_due_seconds
from workers.context import WorkerContext, get_context

log = logging.getLogger(__name__)


def _actor() -> str:
    from rq import get_current_job

    job = get_current_job()
    return f"worker:{job.worker_name}" if job is not None and job.worker_name else f"worker:pid{os.getpid()}"


def thresholds_for(ctx: WorkerContext, detector, session: Session | None = None,
                   upload: Upload | None = None) -> Thresholds:
    s = ctx.settings
    if session is not None:
        s = effective_settings(session, s)  # an admin's thresholds (review settings page)
    mt = detector.manifest.thresholds
    review = s.review_threshold if s.review_threshold is not None else mt.review
    block = s.block_threshold if s.block_threshold is not None else mt.block
    if session is not None and upload is not None and upload.client_id:
        from app.clients import policy_override  # a client key's own thresholds (issue 5)

        review, block = policy_override(session, upload.client_id, review, block)
    return Thresholds(review=review, block=block)


def _open_review(session: Session, upload: Upload, routing: Routing) -> None:
    if routing.review_reason is None:
        return
    item = session.scalar(select(ReviewItem).where(ReviewItem.upload_id == upload.id))
    if item is not None:
        return  # one item per upload, whatever the number of deliveries
    session.add(ReviewItem(upload_id=upload.id, reason=routing.review_reason, priority=routing.priority,
                           state="open", due_at=utcnow() + timedelta(seconds=review_due_seconds(session))))


def analyze_upload(upload_id: str) -> dict[str, Any]:
    ctx = get_context()
    t0 = time.perf_counter()
    with ctx.db.session() as session:
        upload = session.get(Upload, upload_id)
        if upload is None:
            log.warning("upload %s does not exist; nothing to analyse", upload_id)
            return {"upload_id": upload_id, "skipped": "no such upload"}
        if upload.status not in Status.PENDING:
            return {"upload_id": upload_id, "skipped": f"already {upload.status}"}
        detector = ctx.detector()
        model = (detector.model_name, detector.model_version)

        # One look-up for both: this upload's own analysis (an earlier delivery stored it) and the
        # first original analysis of identical bytes by this model version (to reuse).
        same_bytes = session.scalars(
            select(Analysis)
            .where(Analysis.sha256 == upload.sha256, Analysis.model_name == model[0],
                   Analysis.model_version == model[1],
                   or_(Analysis.upload_id == upload.id, Analysis.reused_from.is_(None)))
            .order_by(Analysis.id)).all()
        own = next((a for a in same_bytes if a.upload_id == upload.id), None)
        prior = next((a for a in same_bytes if a.upload_id != upload.id and a.reused_from is None), None)
        if upload.status == Status.QUEUED and own is None and prior is None:
            upload.status = Status.ANALYZING
            session.commit()

        if own is not None:
            analysis = own  # stored by an earlier delivery that died before routing; route it now
        elif prior is not None:
            analysis = Analysis(upload_id=upload.id, sha256=upload.sha256, model_name=prior.model_name,
                                model_version=prior.model_version, provider=prior.provider,
                                score=prior.score, label=prior.label, reasons=prior.reasons,
                                evidence=prior.evidence, timings=prior.timings, reused_from=prior.id)
            metrics.REUSED.inc()
        else:
            result, load_ms = _detect(ctx, detector, upload)
            d = result.to_dict()
            timings = dict(result.timings_ms)
            timings["load"] = round(load_ms, 2)
            analysis = Analysis(upload_id=upload.id, sha256=upload.sha256, model_name=result.model_name,
                                model_version=result.model_version, provider=result.provider,
                                score=result.score, label=str(result.label), reasons=list(result.reasons),
                                evidence={"media": d.get("media"), "frames": d.get("frames", [])},
                                timings=timings)
            for stage, ms in result.timings_ms.items():
                metrics.STAGE_SECONDS.labels(stage=stage).observe(ms / 1000.0)

        s = effective_settings(session, ctx.settings)  # an admin's no_face/unreadable routing
        routing = route(analysis.label, analysis.score, thresholds_for(ctx, detector, session, upload),
                        no_face=s.route_no_face, unreadable=s.route_unreadable,
                        blocked_needs_review=s.blocked_needs_review)
        session.refresh(upload)
        if upload.status == "withdrawn":  # the platform withdrew it while it was analysed (issue 5)
            return {"upload_id": upload_id, "skipped": "withdrawn"}
        before = upload.status
        if own is None:
            session.add(analysis)
        upload.status = routing.status
        _open_review(session, upload, routing)
        session.add(AuditEvent(upload_id=upload.id, actor=_actor(), action="analysis.routed",
                               before=before, after=routing.status, request_id=upload.request_id,
                               detail={"label": analysis.label, "score": analysis.score,
                                       "model": f"{analysis.model_name} {analysis.model_version}",
                                       "reused_from": analysis.reused_from,
                                       "review_reason": routing.review_reason}))
        try:
            session.commit()
        except IntegrityError:
            # Another delivery of the same job stored it first (unique upload/model): its answer stands.
            session.rollback()
            return {"upload_id": upload_id, "skipped": "stored by a concurrent delivery"}
        metrics.VERDICTS.labels(label=analysis.label, status=routing.status).inc()
        metrics.JOB_SECONDS.labels(outcome="ok").observe(time.perf_counter() - t0)
        notify(upload, routing.status)
        return {"upload_id": upload_id, "status": routing.status, "label": analysis.label,
                "score": analysis.score, "reused": analysis.reused_from is not None}


def _detect(ctx: WorkerContext, detector, upload: Upload):
    t = time.perf_counter()
    with ctx.storage.local_path(upload.sha256, ctx.settings.tmp_dir) as path:
        load_ms = (time.perf_counter() - t) * 1000.0
        return detector.analyze_path(path), load_ms


def on_analysis_failure(job, connection, exc_type, exc_value, tb) -> None:
    """RQ failure callback. Runs after every failed attempt (and for abandoned jobs, whose worker
    died); only when no retry is left does it fail closed: the upload goes to human review with
    reason `analysis_failed`, never to `cleared`."""
    final = not job.retries_left  # rq decrements retries_left after this callback runs
    metrics.JOB_FAILURES.labels(final=str(final).lower()).inc()
    if not final:
        return
    upload_id = job.args[0] if job.args else job.id
    mark_failed(get_context(), upload_id, f"{getattr(exc_type, '__name__', exc_type)}: {exc_value}",
                actor=f"worker:{job.worker_name or 'maintenance'}")


def mark_failed(ctx: WorkerContext, upload_id: str, error: str, actor: str) -> bool:
    with ctx.db.session() as session:
        upload = session.get(Upload, upload_id)
        if upload is None or upload.status not in Status.PENDING:
            return False
        routing = failed_routing()
        before = upload.status
        upload.status = routing.status
        _open_review(session, upload, routing)
        session.add(AuditEvent(upload_id=upload.id, actor=actor, action="analysis.failed", before=before,
                               after=routing.status, request_id=upload.request_id,
                               detail={"error": error[:2000], "review_reason": routing.review_reason}))
        session.commit()
        metrics.VERDICTS.labels(label="analysis_failed", status=routing.status).inc()
        notify(upload, routing.status)
        return True
