"""RQ job functions. A job carries only the upload id; everything else is read from the DB and
the blob store, and every status change goes through the process's lifecycle (core/lifecycle.py),
whose conditional updates make a retry or a second delivery harmless."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from core import metrics
from core.models import Analysis, Status, Upload
from core.overrides import review_due_seconds, routing_policy
from core.policy import route, with_bank, with_provenance
from detector.perceptual import MediaHashes
from detector.pipeline import Detector
from detector.provenance import read_provenance
from workers.context import WorkerContext, get_context

log = logging.getLogger(__name__)


def job_actor() -> str:
    """Who acts in the audit trail: the RQ worker running the current job."""
    from rq import get_current_job

    job = get_current_job()
    return f"worker:{job.worker_name}" if job is not None and job.worker_name else f"worker:pid{os.getpid()}"


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
        actor = job_actor()
        own, prior = _earlier_analyses(session, upload, detector)
        # Read before the detector runs, in the same transaction as the reads above: the admin's
        # routing settings and the key's thresholds as they are when the job starts.
        policy = routing_policy(session, ctx.settings, detector.manifest.thresholds, upload.client_id)
        if upload.status == Status.QUEUED and own is None and prior is None:
            ctx.lifecycle.start(session, upload, actor)

        if own is not None:
            analysis = own  # stored by an earlier delivery that died before routing; route it now
        elif prior is not None:
            analysis = Analysis(upload_id=upload.id, sha256=upload.sha256, model_name=prior.model_name,
                                model_version=prior.model_version, provider=prior.provider,
                                score=prior.score, label=prior.label, reasons=prior.reasons,
                                evidence=prior.evidence, timings=prior.timings, reused_from=prior.id)
            metrics.REUSED.inc()
        else:
            analysis = _analyse(ctx, detector, upload)

        # The bank's word, with the bank as it is now (also for a reused or stored analysis).
        matches = ctx.bank.get(session).match(upload.sha256, MediaHashes.from_dict(analysis.evidence.get("hashes")))
        _record_matches(analysis, matches)
        detector_label = (analysis.evidence or {}).get("detector_label", analysis.label)
        routing = route(detector_label, analysis.score, policy.thresholds, no_face=policy.no_face,
                        unreadable=policy.unreadable, blocked_needs_review=policy.blocked_needs_review)
        declared = bool(((analysis.evidence or {}).get("provenance") or {}).get("declared_synthetic"))
        routing = with_provenance(routing, declared, ctx.settings.route_declared_synthetic)
        routing = with_bank(routing, matches, known_fake_needs_review=ctx.settings.known_fake_needs_review)
        if not ctx.lifecycle.route(session, upload, analysis, routing, actor,
                                   review_due_seconds=policy.review_due_seconds, store_analysis=own is None):
            # No longer pending: withdrawn while it was analysed, or stored by a concurrent delivery.
            return {"upload_id": upload_id, "skipped": "no longer pending"}
        metrics.JOB_SECONDS.labels(outcome="ok").observe(time.perf_counter() - t0)
        return {"upload_id": upload_id, "status": routing.status, "label": analysis.label,
                "score": analysis.score, "reused": analysis.reused_from is not None}


def _earlier_analyses(session: Session, upload: Upload, detector: Detector) -> tuple[Analysis | None, Analysis | None]:
    """One look-up for both: this upload's own analysis (an earlier delivery stored it) and the
    first original analysis of identical bytes by this model version (to reuse)."""
    same_bytes = session.scalars(
        select(Analysis)
        .where(Analysis.sha256 == upload.sha256, Analysis.model_name == detector.model_name,
               Analysis.model_version == detector.model_version,
               or_(Analysis.upload_id == upload.id, Analysis.reused_from.is_(None)))
        .order_by(Analysis.id)).all()
    own = next((a for a in same_bytes if a.upload_id == upload.id), None)
    prior = next((a for a in same_bytes if a.upload_id != upload.id and a.reused_from is None), None)
    return own, prior


def _record_matches(analysis: Analysis, matches) -> None:
    """The matches go into the analysis's evidence and reasons (a copy: the row may be shared)."""
    bank_reasons = ("known_fake", "near_known_fake")
    reasons = [r for r in (analysis.reasons or []) if not str(r).startswith(bank_reasons)]
    analysis.reasons = [m.reason for m in matches] + reasons
    analysis.evidence = {**(analysis.evidence or {}), "matches": [m.to_dict() for m in matches]}


def _analyse(ctx: WorkerContext, detector: Detector, upload: Upload) -> Analysis:
    t = time.perf_counter()
    with ctx.storage.local_path(upload.sha256, ctx.settings.tmp_dir) as path:
        load_ms = (time.perf_counter() - t) * 1000.0
        result = detector.analyze_path(path, hashes=True)
        prov = read_provenance(path, upload.kind, trust_anchors=list(ctx.settings.c2pa_trust_anchors))
    d = result.to_dict()
    timings = dict(result.timings_ms)
    timings["load"] = round(load_ms, 2)
    timings["provenance"] = round(sum(prov.timings_ms.values()), 2)
    for stage, ms in timings.items():
        metrics.STAGE_SECONDS.labels(stage=stage).observe(ms / 1000.0)
    label, reasons = str(result.label), list(result.reasons)
    if prov.declared_synthetic:
        # What the file says of itself comes first; the detector's own word stays in the evidence.
        label = DECLARED_SYNTHETIC
        reasons = [f"{DECLARED_SYNTHETIC}: {_declaration(prov)}", f"detector: {result.label}", *reasons]
    return Analysis(upload_id=upload.id, sha256=upload.sha256, model_name=result.model_name,
                    model_version=result.model_version, provider=result.provider, score=result.score,
                    label=label, reasons=reasons,
                    evidence={"media": d.get("media"), "frames": d.get("frames", []), "hashes": result.hashes,
                              "provenance": prov.to_dict(), "detector_label": str(result.label),
                              "occlusion": result.occlusion, "classifier_score": result.classifier_score},
                    timings=timings)


DECLARED_SYNTHETIC = "declared_synthetic"
"""The label of a file that declares itself AI-generated or composited (detector/provenance)."""


def _declaration(prov) -> str:
    """The strongest claim that makes the file declare itself synthetic, in a few words."""
    claims = sorted((c for c in prov.claims if c.declares == "synthetic"), key=lambda c: not c.verified)
    c = claims[0]
    value = c.value.rsplit("/", 1)[-1]
    return f"{'verified ' if c.verified else ''}{c.source} {c.kind.replace('_', ' ')} {value}"


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
        return ctx.lifecycle.fail(session, upload_id, error, actor,
                                  review_due_seconds=review_due_seconds(session))
