"""Live sessions: a calling platform follows one participant of a call, segment by segment.

    open      the API          -> open, verdict pending                 live.opened (audit)
    segment   the API          a segment stored, queued on the live queue (before uploads)
    analysed  a detector worker the segment's score; the rolling verdict; the first time it
                               crosses the review threshold the session is `suspected`: its worst
                               segment goes to the review queue (Lifecycle.live_review) and the
                               webhook `live.suspected` fires
    failed    a worker, for good the segment is marked failed (the session goes on)
    end       the API / expiry  -> ended, with the summary              live.ended (audit + webhook)

Every change of a session is a conditional UPDATE here (two workers never both make it
suspected); the upload made for review goes through the upload lifecycle like any other. The
web app and the workers each hold one `Live` per process (app/db.py, workers/context.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import IO, Any

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core import defaults
from core.errors import ApiError
from core.lifecycle import Lifecycle, audit
from core.models import (
    Analysis,
    ApiClient,
    LiveSegment,
    LiveSession,
    LiveState,
    LiveVerdict,
    SegmentState,
    Status,
    Upload,
    utcnow,
)
from core.overrides import review_due_seconds, routing_policy
from core.schemas import LiveSessionOut, as_utc
from detector.occlusion import PASTED_AT

log = logging.getLogger(__name__)

SUSPECTED, ENDED = "live.suspected", "live.ended"
"""Webhook events of a session."""

LiveListener = Callable[[LiveSession, str], None]
"""Called with the session and the event after the change is committed."""

_DONE_KEY = "verity:live:done:"
WAIT_SLICE_SECONDS = 2.0
"""A long wait for a segment's answer is cut into BLPOPs this long."""
ANSWER_TIMELINE = 10
"""A segment's answer carries the session's last segments only (GET has them all)."""
OCCLUSION_DECISIVE = PASTED_AT
"""A segment whose occlusion check scored at least this caught a pasted face: the session
takes that segment's score on its own (core/live.rolling_score)."""


def done_key(segment_id: str) -> str:
    return _DONE_KEY + segment_id


@dataclass(frozen=True, slots=True)
class Part:
    """One file of a segment as the API received it."""

    stream: IO[bytes]
    filename: str | None


def rolling_score(segments: list[LiveSegment], k: int = defaults.LIVE_ROLLING_TOP_K) -> float | None:
    """The session's score: the mean of its k highest segment scores, or the highest score of a
    segment whose occlusion check caught a pasted face (a hand cut off at the face's edge is
    evidence on its own). None until a segment with a face was analysed."""
    scored = [s for s in segments if s.state == SegmentState.ANALYZED and s.score is not None]
    if not scored:
        return None
    top = sorted((s.score for s in scored), reverse=True)[:k]
    score = sum(top) / len(top)
    caught = [s.score for s in scored if ((s.evidence or {}).get("occlusion") or {}).get("score") is not None
              and s.evidence["occlusion"]["score"] >= OCCLUSION_DECISIVE]
    return max([score, *caught])


class Live:
    def __init__(self, lifecycle: Lifecycle, redis: Redis | None) -> None:
        self.lifecycle = lifecycle
        self.settings = lifecycle.settings
        self.storage = lifecycle.storage
        self.redis = redis
        self._listeners: list[LiveListener] = []

    def subscribe(self, listener: LiveListener) -> None:
        if listener not in self._listeners:
            self._listeners.append(listener)

    def _notify(self, live: LiveSession, event: str) -> None:
        for listener in self._listeners:
            try:
                listener(live, event)
            except Exception:
                log.exception("live listener %r failed for session %s (%s)", listener, live.id, event)

    # --- the API's side -------------------------------------------------------------------------

    def open(self, session: Session, client: ApiClient, *, external_id: str | None, webhook: bool,
             actor: str, request_id: str | None = None) -> LiveSession:
        now = utcnow()
        self.expire_due(session, client_id=client.id)
        n_open = session.scalar(select(func.count()).select_from(LiveSession).where(
            LiveSession.client_id == client.id, LiveSession.state == LiveState.OPEN))
        if n_open >= defaults.LIVE_MAX_OPEN_SESSIONS:
            raise ApiError(429, "too_many_sessions",
                           f"this key has {n_open} open live sessions (at most {defaults.LIVE_MAX_OPEN_SESSIONS}); "
                           "end one first", limit_sessions=defaults.LIVE_MAX_OPEN_SESSIONS, retry_after=30)
        live = LiveSession(client_id=client.id, external_id=external_id, webhook=webhook, state=LiveState.OPEN,
                           verdict=LiveVerdict.PENDING, segments=0, opened_at=now, updated_at=now,
                           expires_at=now + timedelta(seconds=defaults.LIVE_SESSION_SECONDS))
        session.add(live)
        session.flush()
        audit(session, "live.opened", actor, detail={"live_session_id": live.id, "external_id": external_id},
              request_id=request_id, at=now)
        session.commit()
        return live

    def add_segment(self, session: Session, live: LiveSession, *, start: float, parts: list[Part],
                    fps: float | None, actor: str) -> LiveSegment:
        """Check, store and queue one segment: one video chunk, or 2..N image frames `fps` apart."""
        self._check_open(session, live)
        if not parts:
            raise ApiError(400, "missing_file", "send the segment as `file` (an MP4 or WebM chunk) or as "
                                                "several `frame` fields (JPEG frames)")
        if not (start >= 0 and start < 1e7):
            raise ApiError(422, "invalid_request", "start must be the segment's start in the call, in seconds (>= 0)")
        if live.segments >= defaults.LIVE_MAX_SEGMENTS:
            raise ApiError(409, "too_many_segments", f"a session takes at most {defaults.LIVE_MAX_SEGMENTS} "
                                                     "segments: open a new one", limit_segments=defaults.LIVE_MAX_SEGMENTS)
        behind = session.scalar(select(func.count()).select_from(LiveSegment).where(
            LiveSegment.session_id == live.id, LiveSegment.state == SegmentState.QUEUED))
        if behind >= defaults.LIVE_MAX_QUEUED_SEGMENTS:
            raise ApiError(429, "segments_behind", f"{behind} segments of this session are still waiting for a "
                                                   "worker: send the next one later, or skip one",
                           limit_queued=defaults.LIVE_MAX_QUEUED_SEGMENTS, retry_after=2)
        one_chunk = len(parts) == 1
        rate = fps or 5.0
        if not one_chunk and not 2 <= len(parts) <= defaults.LIVE_SEGMENT_MAX_FRAMES:
            raise ApiError(422, "invalid_request", f"send 2-{defaults.LIVE_SEGMENT_MAX_FRAMES} frames per "
                                                   "segment (or one video chunk)")
        if not one_chunk and not 0.1 <= rate <= 60:
            raise ApiError(422, "invalid_request", "fps must lie within [0.1, 60]")
        # Every part is checked before it is stored: a refused segment leaves no blob behind.
        budget = defaults.LIVE_SEGMENT_MAX_BYTES
        stored: list[tuple[str, int, str]] = []  # sha256, bytes, mime
        duration: float | None = None
        for part in parts:
            with self.lifecycle.receive(part.stream, limit=budget) as got:
                if got.kind == "video" and not one_chunk:
                    raise ApiError(422, "invalid_request", "a segment is one video chunk, or image frames: not several "
                                                           "chunks, not both")
                if got.kind == "image" and one_chunk:
                    raise ApiError(422, "invalid_request", f"send 2-{defaults.LIVE_SEGMENT_MAX_FRAMES} frames per "
                                                           "segment (or one video chunk)")
                if got.kind == "video":
                    duration = got.info.duration
                    lo, hi = defaults.LIVE_SEGMENT_MIN_SECONDS, defaults.LIVE_SEGMENT_MAX_SECONDS
                    if duration is not None and not lo <= duration <= hi:
                        raise ApiError(422, "segment_length", f"the chunk lasts {duration:.1f} s; a segment lasts "
                                                              f"{lo:g}-{hi:g} s", min_seconds=lo, max_seconds=hi)
                self.storage.put_file(got.sha256, got.path)
            budget -= got.size
            stored.append((got.sha256, got.size, got.mime))
        if one_chunk:
            kind, frames = "video", None
        else:
            kind = "frames"
            frames = [{"sha256": sha, "t": round(i / rate, 3)} for i, (sha, _, _) in enumerate(stored)]
            duration = (len(stored) - 1) / rate
        now = utcnow()
        seq = live.segments
        won = session.execute(update(LiveSession).where(
            LiveSession.id == live.id, LiveSession.state == LiveState.OPEN, LiveSession.segments == seq)
            .values(segments=seq + 1, updated_at=now).execution_options(synchronize_session=False)).rowcount == 1
        if not won:
            session.rollback()
            raise ApiError(409, "conflict", "another segment of this session arrived at the same time, or the "
                                            "session ended; send it again")
        segment = LiveSegment(session_id=live.id, seq=seq, start=float(start), duration=duration, kind=kind,
                              mime=stored[0][2], sha256=stored[0][0], frames=frames,
                              bytes=sum(b for _, b, _ in stored), state=SegmentState.QUEUED, received_at=now)
        session.add(segment)
        session.commit()
        self._enqueue(segment.id)
        return segment

    def _enqueue(self, segment_id: str) -> None:
        from core.queue import enqueue_segment

        try:
            if self.redis is None:
                raise RuntimeError("no Redis connection in this process")
            enqueue_segment(self.settings, self.redis, segment_id)
        except Exception:
            log.exception("enqueue of live segment %s failed; the live reconciler will retry it", segment_id)

    def wait(self, segment_id: str, seconds: float) -> bool:
        """Block until the worker signals the segment's analysis (or `seconds` pass). BLPOP in
        short slices: a connection's socket timeout must never cut a long wait into an error."""
        if self.redis is None or seconds <= 0:
            return False
        deadline = time.monotonic() + seconds
        key = done_key(segment_id)
        try:
            while (left := deadline - time.monotonic()) > 0:
                got = self.redis.blpop([key], timeout=max(0.05, min(WAIT_SLICE_SECONDS, left)))
                if got is not None:
                    pipe = self.redis.pipeline()
                    pipe.rpush(key, b"1")  # leave it for another waiter
                    pipe.expire(key, defaults.LIVE_RESULT_TTL_SECONDS)
                    pipe.execute()
                    return True
        except RedisError:
            log.warning("waiting for live segment %s: Redis failed; answering from the database", segment_id)
        return False

    def _check_open(self, session: Session, live: LiveSession) -> None:
        now = utcnow()
        if live.state == LiveState.OPEN and as_utc(live.expires_at) <= now:
            self.end(session, live, by="expiry", actor="live:expiry")
        if live.state != LiveState.OPEN:
            raise ApiError(409, "session_ended", f"live session {live.id} has ended ({live.ended_by})")

    def end(self, session: Session, live: LiveSession, *, by: str, actor: str,
            request_id: str | None = None) -> LiveSession:
        """Close the session (twice changes nothing). Segments still queued are analysed and
        still count; the summary is in GET."""
        if live.state == LiveState.ENDED:
            return live
        now = utcnow()
        won = session.execute(update(LiveSession).where(LiveSession.id == live.id, LiveSession.state == LiveState.OPEN)
                              .values(state=LiveState.ENDED, ended_at=now, ended_by=by, updated_at=now)
                              .execution_options(synchronize_session=False)).rowcount == 1
        if not won:
            session.rollback()
            session.refresh(live)
            return live
        audit(session, "live.ended", actor, detail={"live_session_id": live.id, "by": by, "verdict": live.verdict,
                                                    "segments": live.segments, "score": live.score},
              request_id=request_id, at=now)
        session.commit()
        session.refresh(live)
        self._notify(live, ENDED)
        return live

    def expire_due(self, session: Session, *, client_id: str | None = None) -> list[str]:
        """End the sessions past their lifetime or idle too long; returns their ids."""
        now = utcnow()
        idle = now - timedelta(seconds=defaults.LIVE_IDLE_SECONDS)
        q = select(LiveSession).where(LiveSession.state == LiveState.OPEN,
                                      (LiveSession.expires_at <= now) | (LiveSession.updated_at <= idle))
        if client_id is not None:
            q = q.where(LiveSession.client_id == client_id)
        ended = []
        for live in session.scalars(q.limit(200)).all():
            self.end(session, live, by="expiry", actor="live:expiry")
            ended.append(live.id)
        return ended

    # --- the worker's side ----------------------------------------------------------------------

    def analysed(self, session: Session, segment_id: str, result: dict[str, Any], actor: str,
                 thresholds) -> LiveSegment | None:
        """Store a segment's analysis (a second delivery changes nothing), update the rolling
        verdict, and hand the session to review the first time it is suspected."""
        segment = session.get(LiveSegment, segment_id)
        if segment is None or segment.state != SegmentState.QUEUED:
            return segment
        now = utcnow()
        won = session.execute(update(LiveSegment).where(LiveSegment.id == segment_id,
                                                         LiveSegment.state == SegmentState.QUEUED)
                              .values(state=SegmentState.ANALYZED, score=result.get("score"),
                                      classifier_score=result.get("classifier_score"), label=result.get("label"),
                                      reasons=result.get("reasons"), evidence=_segment_evidence(result),
                                      analyzed_at=now)
                              .execution_options(synchronize_session=False)).rowcount == 1
        if not won:
            session.rollback()
            return session.get(LiveSegment, segment_id)
        session.commit()
        session.expire_all()
        live = session.get(LiveSession, segment.session_id)
        suspected = self._update_verdict(session, live, result, actor, thresholds)
        self._signal(segment_id)
        if suspected is not None:
            self.lifecycle.live_review_committed(suspected)
            self._notify(live, SUSPECTED)
        return session.get(LiveSegment, segment_id)

    def failed(self, session: Session, segment_id: str, error: str) -> None:
        session.execute(update(LiveSegment).where(LiveSegment.id == segment_id,
                                                   LiveSegment.state == SegmentState.QUEUED)
                        .values(state=SegmentState.FAILED, error=error[:2000], analyzed_at=utcnow())
                        .execution_options(synchronize_session=False))
        session.commit()
        self._signal(segment_id)

    def _signal(self, segment_id: str) -> None:
        if self.redis is None:
            return
        try:
            pipe = self.redis.pipeline()
            pipe.rpush(done_key(segment_id), b"1")
            pipe.expire(done_key(segment_id), defaults.LIVE_RESULT_TTL_SECONDS)
            pipe.execute()
        except Exception:  # the answer is in the DB; a waiter times out into 202 and polls
            log.exception("could not signal live segment %s", segment_id)

    def _update_verdict(self, session: Session, live: LiveSession, result: dict[str, Any],
                        actor: str, thresholds) -> Upload | None:
        segments = session.scalars(select(LiveSegment).where(LiveSegment.session_id == live.id)).all()
        score = rolling_score(list(segments))
        policy = routing_policy(session, self.settings, thresholds, live.client_id)
        threshold = policy.thresholds.review
        seen_face = any(s.state == SegmentState.ANALYZED and s.label not in ("no_face", "unreadable")
                        for s in segments)
        verdict = (LiveVerdict.SUSPECTED if live.verdict == LiveVerdict.SUSPECTED or (score is not None and score >= threshold)
                   else LiveVerdict.NO_SIGN if seen_face else LiveVerdict.NO_FACE)
        now = utcnow()
        values: dict[str, Any] = {"score": None if score is None else round(score, 4), "verdict": verdict,
                                  "updated_at": now}
        first = verdict == LiveVerdict.SUSPECTED and live.verdict != LiveVerdict.SUSPECTED
        q = update(LiveSession).where(LiveSession.id == live.id)
        if first:
            q = q.where(LiveSession.verdict != LiveVerdict.SUSPECTED)  # only one worker hands it over
            values["suspected_at"] = now
        if not session.execute(q.values(**values).execution_options(synchronize_session=False)).rowcount:
            session.rollback()
            return None
        upload = None
        if first:
            worst = max((s for s in segments if s.state == SegmentState.ANALYZED and s.score is not None),
                        key=lambda s: s.score)
            analysis = Analysis(sha256=worst.sha256, model_name=result.get("model_name", ""),
                                model_version=result.get("model_version", ""), provider=result.get("provider", ""),
                                score=round(score, 4), label="suspected_fake",
                                reasons=[(f"live session {live.id}: rolling score {score:.2f} crossed the review "
                                         f"threshold {threshold:.2f} at segment {worst.seq} ({worst.start:.1f} s)"),
                                         *(worst.reasons or [])],
                                evidence={**(worst.evidence or {}), "live": timeline(live, segments)},
                                timings={})
            kind = "video" if worst.kind == "video" else "image"
            upload = self.lifecycle.live_review(
                session, client_id=live.client_id, external_id=live.external_id, sha256=worst.sha256, kind=kind,
                mime=worst.mime, size=worst.bytes, analysis=analysis, live_session_id=live.id, actor=actor,
                review_due_seconds=review_due_seconds(session))
            session.execute(update(LiveSession).where(LiveSession.id == live.id).values(upload_id=upload.id)
                            .execution_options(synchronize_session=False))
        elif live.upload_id is not None:
            # Already in review: the moderator sees the timeline as it grows.
            analysis = session.scalar(select(Analysis).where(Analysis.upload_id == live.upload_id))
            if analysis is not None:
                analysis.evidence = {**(analysis.evidence or {}), "live": timeline(live, segments)}
        session.commit()
        session.refresh(live)
        return upload


def _segment_evidence(result: dict[str, Any]) -> dict[str, Any]:
    return {"media": result.get("media"), "frames": result.get("frames", []), "occlusion": result.get("occlusion"),
            "model": f"{result.get('model_name', '')} {result.get('model_version', '')}".strip(),
            "timings_ms": result.get("timings_ms")}


def segment_summary(s: LiveSegment, *, show_score: bool = True) -> dict[str, Any]:
    occ = (s.evidence or {}).get("occlusion") or None
    faces = sum(len(f.get("faces", [])) for f in (s.evidence or {}).get("frames", []))
    out: dict[str, Any] = {"seq": s.seq, "start": s.start, "duration": s.duration, "kind": s.kind, "state": s.state,
                           "label": s.label, "faces": faces if s.state == SegmentState.ANALYZED else None,
                           "reasons": s.reasons or [], "error": s.error}
    if show_score:
        out["score"] = s.score
        out["classifier_score"] = s.classifier_score
    out["occlusion"] = None if occ is None else {
        "checked": occ.get("checked"), "events": [{**{k: e.get(k) for k in ("start", "end", "peak", "covered")},
                                                   **({"score": e.get("score")} if show_score else {}),
                                                   "at": round(s.start + (e.get("peak") or 0.0), 3)}
                                                  for e in occ.get("events", [])],
        **({"score": occ.get("score")} if show_score else {})}
    return out


def timeline(live: LiveSession, segments, *, show_score: bool = True) -> dict[str, Any]:
    return {"session_id": live.id, "segments": [segment_summary(s, show_score=show_score)
                                                for s in sorted(segments, key=lambda s: s.seq)]}


def _live_body(live: LiveSession, segments, *, show_score: bool, upload: Upload | None = None,
              last: int | None = None) -> dict[str, Any]:
    """The session's fields (live_out validates them as LiveSessionOut). With `last`, the timeline
    and the occlusion events are those of the last segments only (the counts stay whole)."""
    segs = sorted(segments, key=lambda s: s.seq)
    shown = [segment_summary(s, show_score=show_score) for s in (segs[-last:] if last is not None else segs)]
    body: dict[str, Any] = {
        "id": live.id, "external_id": live.external_id, "state": live.state, "verdict": live.verdict,
        "segments": {"received": live.segments,
                     "analyzed": sum(1 for s in segs if s.state == SegmentState.ANALYZED),
                     "queued": sum(1 for s in segs if s.state == SegmentState.QUEUED),
                     "failed": sum(1 for s in segs if s.state == SegmentState.FAILED)},
        "opened_at": live.opened_at, "expires_at": live.expires_at, "ended_at": live.ended_at,
        "ended_by": live.ended_by, "suspected_at": live.suspected_at,
        "review": None if live.upload_id is None else {
            "upload_id": live.upload_id, "status": upload.status if upload is not None else None,
            "verdict": upload.status if upload is not None and upload.status in Status.VERDICTS else None},
        "occlusion_events": [{**e, "segment": s["seq"]} for s in shown
                             for e in ((s["occlusion"] or {}).get("events") or [])],
        "timeline": shown,
        "links": {"self": f"/api/v1/live/{live.id}", "segments": f"/api/v1/live/{live.id}/segments"},
    }
    if show_score:
        body["score"] = live.score
    return body


def live_out(live: LiveSession, segments, *, show_score: bool, upload: Upload | None = None,
             last: int | None = None) -> LiveSessionOut:
    """The session as the API and the webhooks show it."""
    return LiveSessionOut.model_validate(_live_body(live, segments, show_score=show_score, upload=upload, last=last))
