"""Live sessions (`/api/v1/live`): a calling platform follows one participant of a call segment by
segment (core/live.py). Same Bearer keys, errors and rate limits as the rest of /api/v1."""

from __future__ import annotations

import time

from flask import request
from pydantic import ValidationError
from sqlalchemy import select

from app.api import _client, _json, _wait_seconds, bp
from app.db import get_live, get_session
from app.errors import request_id
from core import defaults
from core.errors import ApiError
from core.live import ANSWER_TIMELINE, Part, live_out, segment_summary
from core.models import LiveSegment, LiveSession, SegmentState, Upload
from core.schemas import LiveOpenIn, LiveSegmentAnswer, LiveSegmentOut, LiveSessionOut


def _own_session(session_id: str) -> LiveSession:
    live = get_session().get(LiveSession, session_id) if session_id.isalnum() and len(session_id) <= 32 else None
    if live is None or live.client_id != _client().id:
        raise ApiError(404, "not_found", f"no live session {session_id}")
    return live


def _out(live: LiveSession, *, last: int | None = None) -> LiveSessionOut:
    """The session; with `last`, its timeline holds only the last segments (the counts are whole)."""
    session = get_session()
    segments = session.scalars(select(LiveSegment).where(LiveSegment.session_id == live.id)).all()
    upload = session.get(Upload, live.upload_id) if live.upload_id else None
    return live_out(live, segments, show_score=_client().show_score, upload=upload, last=last)


@bp.post("/live")
def open_live():
    client = _client()
    raw = request.get_json(silent=True) if request.content_length else {}
    if raw is None:
        raise ApiError(400, "invalid_request", "the body must be a JSON object (or empty)")
    try:
        body = LiveOpenIn.model_validate(raw)
    except ValidationError as e:
        raise ApiError(422, "invalid_request", "; ".join(f"{'.'.join(map(str, err['loc'])) or 'body'}: "
                                                          f"{err['msg']}" for err in e.errors())) from None
    live = get_live().open(get_session(), client, external_id=body.external_id, webhook=body.webhook,
                           actor=f"api:{client.name}", request_id=request_id())
    out = _out(live)
    return _json(out, 201, {"Location": out.links.self})


def _float_field(name: str, default: float | None = None) -> float | None:
    raw = request.form.get(name, request.args.get(name))
    if raw in (None, ""):
        if default is None and name == "start":
            raise ApiError(400, "invalid_request", "send `start`: the segment's start in the call, in seconds")
        return default
    try:
        return float(raw)
    except ValueError:
        raise ApiError(400, "invalid_request", f"{name} must be a number") from None


@bp.post("/live/<session_id>/segments")
def add_segment(session_id: str):
    client = _client()
    request.max_content_length = defaults.LIVE_SEGMENT_MAX_BYTES + defaults.UPLOAD_FORM_OVERHEAD_BYTES
    live = _own_session(session_id)
    wait = _wait_seconds() if request.args.get("wait") not in (None, "") else defaults.LIVE_ANSWER_WAIT_SECONDS
    mimetype = request.mimetype or ""
    if mimetype == "multipart/form-data":
        files = request.files.getlist("file") + request.files.getlist("frame")
        parts = [Part(f.stream, f.filename) for f in files]
    elif mimetype.startswith(("video/", "image/")):
        parts = [Part(request.stream, None)]
    else:
        raise ApiError(400, "missing_file", "send the segment as multipart/form-data (`file`: one MP4 or WebM "
                                            "chunk, or several `frame`: JPEG frames) or as the raw body")
    start = _float_field("start")
    fps = _float_field("fps", 0.0) or None
    t0 = time.monotonic()
    segment = get_live().add_segment(get_session(), live, start=start, parts=parts, fps=fps,
                                     actor=f"api:{client.name}")
    segment_id = segment.id
    answered = get_live().wait(segment_id, max(0.0, wait - (time.monotonic() - t0)))
    session = get_session()
    session.commit()  # end the read transaction: the worker's commit is visible now
    session.expire_all()
    segment = session.get(LiveSegment, segment_id)
    answered = segment.state != SegmentState.QUEUED
    live = session.get(LiveSession, session_id)
    body = LiveSegmentAnswer(segment=LiveSegmentOut.model_validate(segment_summary(segment,
                                                                                   show_score=client.show_score)),
                             session=_out(live, last=ANSWER_TIMELINE), answered=answered)
    return _json(body, 200 if answered else 202, {"Location": f"/api/v1/live/{live.id}"})


@bp.get("/live/<session_id>")
def get_live_session(session_id: str):
    wait = _wait_seconds()
    live = _own_session(session_id)
    deadline = time.monotonic() + wait
    session = get_session()

    def pending() -> bool:
        return session.scalar(select(LiveSegment.id).where(LiveSegment.session_id == live.id,
                                                           LiveSegment.state == SegmentState.QUEUED).limit(1)) is not None

    while time.monotonic() < deadline and pending():
        session.commit()
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
    session.commit()
    session.expire_all()
    return _json(_out(session.get(LiveSession, session_id)))


def _end(session_id: str):
    client = _client()
    live = get_live().end(get_session(), _own_session(session_id), by="client", actor=f"api:{client.name}",
                          request_id=request_id())
    return _json(_out(live))


@bp.delete("/live/<session_id>")
def end_live(session_id: str):
    """End the session (the call or the participant left): the summary."""
    return _end(session_id)


@bp.post("/live/<session_id>/end")
def end_live_post(session_id: str):
    """The same as DELETE, for clients that cannot send one."""
    return _end(session_id)
