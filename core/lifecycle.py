"""The upload lifecycle: every status change of an upload, in one place (README.md, "Architecture").

    accept    the door (page, API)   -> queued                        upload.accepted
    start     a detector worker      queued -> analyzing              analysis.started
    route     a detector worker      pending -> cleared | in_review | blocked
                                                                      analysis.routed (+ review item)
    fail      a worker, for good     pending -> in_review             analysis.failed (+ review item)
    requeue   the reconciler         pending -> queued                upload.requeued
    decide    a moderator            a claimed item -> its verdict    review.decided / review.escalated
    revise    an admin               a decided upload -> a new verdict  review.revised
    withdraw  the platform           any -> withdrawn                 upload.withdrawn (item closed)

Each transition sets the status with a conditional UPDATE (the status it starts from is part of
the WHERE clause, so two processes can never both move one upload), writes its audit event and
the review item in the same transaction, commits, and only then tells the listeners. Listeners
subscribe where the process starts: the web app (app/__init__.py) and the worker context
(workers/context.py) subscribe the webhook outbox. A listener that fails is logged and never
undoes a committed transition.

No Flask and no RQ worker here: the caller passes its session, the acting party (`actor`) and
its request id; the lifecycle owns the blob store and the analysis queue of its process.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any, Protocol

from redis import Redis
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from werkzeug.utils import secure_filename

from core import metrics
from core.errors import ApiError
from core.models import (
    Analysis,
    AuditEvent,
    Decision,
    ReviewItem,
    ReviewState,
    Status,
    Upload,
    new_id,
    utcnow,
)
from core.policy import Routing, failed_routing, review_priority
from core.queue import enqueue_analysis
from core.settings import Settings
from core.storage import Storage
from detector.media import SNIFF_BYTES, MediaInfo, UnreadableMedia, decode_sample, probe, sniff

log = logging.getLogger(__name__)

Listener = Callable[[Upload, str], None]
"""Called with the upload and its new status after each committed transition."""

NOTE_MAX = 4000
"""Longest moderator note kept with a decision."""

_CHUNK = 1 << 20


class Conflict(Exception):
    """The transition no longer applies: someone else holds or decided the item, or the upload
    changed meanwhile. Nothing was written."""


class Reviewer(Protocol):
    """Who decides: a moderator or an admin account (core.models.User)."""

    username: str
    role: str

    @property
    def is_admin(self) -> bool: ...

    @property
    def actor(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Received:
    """An upload that passed the door: spooled to `path`, hashed, sniffed and probed."""

    path: Path
    sha256: str
    size: int
    kind: str
    mime: str
    info: MediaInfo


def audit(session: Session, action: str, actor: str, *, upload_id: str | None = None,
          before: str | None = None, after: str | None = None, detail: dict[str, Any] | None = None,
          request_id: str | None = None, at: datetime | None = None) -> None:
    """Add one audit event to the session's transaction (the caller commits). The one way an
    audit event is written: the lifecycle's transitions and the other audited actions (claims,
    sign-ins, keys, settings) alike. A Core INSERT on the session's connection: no unit of work."""
    session.connection().execute(insert(AuditEvent.__table__), {
        "upload_id": upload_id, "actor": actor, "action": action, "before": before, "after": after,
        "detail": detail or {}, "request_id": request_id, "created_at": at or utcnow()})


class Lifecycle:
    """One per process (web app, worker): the settings, the blob store and the analysis queue it
    works with, and the listeners told of each committed transition."""

    def __init__(self, settings: Settings, storage: Storage, redis: Redis | None) -> None:
        self.settings = settings
        self.storage = storage
        self.redis = redis
        self._listeners: list[Listener] = []

    # --- listeners ----------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        if listener not in self._listeners:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _notify(self, upload: Upload, status: str) -> None:
        for listener in self._listeners:
            try:
                listener(upload, status)
            except Exception:
                log.exception("listener %r failed for upload %s (%s)", listener, upload.id, status)

    # --- the door ---------------------------------------------------------------------------

    @contextmanager
    def receive(self, stream: IO[bytes], *, decode: bool = False, limit: int | None = None) -> Iterator[Received]:
        """Spool, hash and check an upload; the temp file is removed when the block ends.
        Refusals: 413 past the size limit, 422 empty or unreadable, 415 a type not allowed. With
        `decode`, the media is decoded at the door (all of an image, the first frames of a video),
        so that a truncated or corrupt file is refused here instead of reaching a moderator."""
        path, sha, size, head = _spool(stream, self.settings.tmp_dir,
                                       self.settings.max_upload_bytes if limit is None else limit)
        try:
            if size == 0:
                metrics.REJECTED.labels(reason="empty").inc()
                raise ApiError(422, "unreadable", "the file is empty", reason="empty")
            sniffed = sniff(head)
            if sniffed is None:
                metrics.REJECTED.labels(reason="unsupported_type").inc()
                raise ApiError(415, "unsupported_type", "not an allowed type (JPEG, PNG, WebP, GIF, MP4, MOV, "
                                                        "WebM, MKV), judged from the bytes")
            kind, mime = sniffed
            try:
                info = probe(path, kind)
                if decode:
                    decode_sample(path, kind)
            except UnreadableMedia as e:
                metrics.REJECTED.labels(reason="unreadable").inc()
                raise ApiError(422, "unreadable", e.message, reason=e.reason) from None
            yield Received(path, sha, size, kind, mime, info)
        finally:
            path.unlink(missing_ok=True)

    def accept(self, session: Session, stream: IO[bytes], filename: str | None, source: str, *,
               actor: str, request_id: str | None = None, client_id: str | None = None,
               external_id: str | None = None, metadata: dict[str, Any] | None = None,
               idempotency_key: str | None = None, anonymous: bool = False) -> Upload:
        """The door: validate, store the blob, commit the `queued` row, then enqueue. The record
        exists before the queue hears of it; a failed enqueue is left to the reconciler. An
        anonymous upload is decoded at the door: unreadable, it is refused, never reviewed."""
        with self.receive(stream, decode=anonymous) as got:
            self.storage.put_file(got.sha256, got.path)
        now = utcnow()
        row = {
            "id": new_id(), "sha256": got.sha256, "kind": got.kind, "mime": got.mime, "bytes": got.size,
            "filename": secure_filename(filename or "")[:255] or None, "status": Status.QUEUED,
            "source": source, "width": got.info.width, "height": got.info.height,
            "duration": got.info.duration, "request_id": request_id, "client_id": client_id,
            "external_id": external_id, "metadata": metadata, "idempotency_key": idempotency_key,
            "anonymous": anonymous, "created_at": now, "updated_at": now,
        }
        # Plain INSERTs on the session's connection: a third of the CPU of the ORM unit of work
        # on this, the hottest write path (bench/service.py ingest).
        session.connection().execute(insert(Upload.__table__), row)
        audit(session, "upload.accepted", actor, upload_id=row["id"], after=Status.QUEUED,
              request_id=request_id, at=now,
              detail={"sha256": got.sha256, "bytes": got.size, "kind": got.kind, "mime": got.mime})
        session.commit()
        upload = Upload(**{("metadata_json" if k == "metadata" else k): v for k, v in row.items()})
        metrics.UPLOADS.labels(source=source, kind=got.kind).inc()
        self._enqueue(upload.id, fresh=True)
        self._notify(upload, Status.QUEUED)
        return upload

    def _enqueue(self, upload_id: str, *, fresh: bool = False) -> None:
        try:
            if self.redis is None:
                raise RuntimeError("no Redis connection in this process")
            enqueue_analysis(self.settings, self.redis, upload_id, fresh=fresh)
        except Exception:
            # Not lost: the row is `queued`, and the reconciler enqueues it once it is overdue.
            log.exception("enqueue failed for upload %s; the reconciler will retry it", upload_id)
            metrics.ENQUEUE_FAILURES.inc()

    # --- the detector's side ----------------------------------------------------------------

    def start(self, session: Session, upload: Upload, actor: str) -> bool:
        """queued -> analyzing, when the upload is still queued; False (nothing written) otherwise."""
        now = utcnow()
        if not _move(session, upload.id, (Status.QUEUED,), Status.ANALYZING, now):
            session.rollback()
            return False
        audit(session, "analysis.started", actor, upload_id=upload.id, before=Status.QUEUED,
              after=Status.ANALYZING, request_id=upload.request_id, at=now)
        session.commit()
        _mirror(upload, Status.ANALYZING, now)
        self._notify(upload, Status.ANALYZING)
        return True

    def route(self, session: Session, upload: Upload, analysis: Analysis, routing: Routing, actor: str, *,
              review_due_seconds: int, store_analysis: bool = True) -> bool:
        """A pending upload gets its analysis and the policy's status (and a review item when the
        policy asks for one). False, with nothing written, when the upload is no longer pending
        (withdrawn meanwhile) or another delivery of the same job stored its analysis first."""
        now = utcnow()
        before = upload.status
        if not _move(session, upload.id, Status.PENDING, routing.status, now):
            session.rollback()
            return False
        if store_analysis:
            session.add(analysis)
        _open_review_item(session, upload, routing, now, review_due_seconds)
        audit(session, "analysis.routed", actor, upload_id=upload.id, before=before, after=routing.status,
              request_id=upload.request_id, at=now,
              detail={"label": analysis.label, "score": analysis.score,
                      "model": f"{analysis.model_name} {analysis.model_version}",
                      "reused_from": analysis.reused_from, "review_reason": routing.review_reason})
        try:
            session.commit()
        except IntegrityError:
            # Another delivery of the same job stored it first (unique upload/model): its answer stands.
            session.rollback()
            return False
        _mirror(upload, routing.status, now)
        metrics.VERDICTS.labels(label=analysis.label, status=routing.status).inc()
        self._notify(upload, routing.status)
        return True

    def fail(self, session: Session, upload_id: str, error: str, actor: str, *,
             review_due_seconds: int) -> bool:
        """Fail closed: a pending upload whose analysis gave up for good goes to human review with
        reason `analysis_failed`, never to `cleared`. False when it is no longer pending."""
        upload = session.get(Upload, upload_id)
        if upload is None or upload.status not in Status.PENDING:
            return False
        routing = failed_routing()
        now = utcnow()
        before = upload.status
        if not _move(session, upload_id, Status.PENDING, routing.status, now):
            session.rollback()
            return False
        _open_review_item(session, upload, routing, now, review_due_seconds)
        audit(session, "analysis.failed", actor, upload_id=upload_id, before=before, after=routing.status,
              request_id=upload.request_id, at=now,
              detail={"error": error[:2000], "review_reason": routing.review_reason})
        session.commit()
        _mirror(upload, routing.status, now)
        metrics.VERDICTS.labels(label="analysis_failed", status=routing.status).inc()
        self._notify(upload, routing.status)
        return True

    def requeue(self, session: Session, upload: Upload, reason: str, actor: str = "reconciler") -> bool:
        """A pending upload whose job Redis forgot goes back on the queue (the reconciler)."""
        now = utcnow()
        before = upload.status
        if not _move(session, upload.id, Status.PENDING, Status.QUEUED, now, enqueued_at=now):
            session.rollback()
            return False
        audit(session, "upload.requeued", actor, upload_id=upload.id, before=before, after=Status.QUEUED,
              request_id=upload.request_id, at=now, detail={"reason": reason})
        session.commit()
        self._enqueue(upload.id)
        metrics.RECONCILED.inc()
        self._notify(upload, Status.QUEUED)
        return True

    def live_review(self, session: Session, *, client_id: str, external_id: str | None, sha256: str,
                    kind: str, mime: str, size: int, analysis: Analysis, live_session_id: str, actor: str,
                    review_due_seconds: int) -> Upload:
        """A live session crossed the review threshold (core/live.py): its worst segment becomes an
        upload that goes straight to `in_review` with the review item `live_suspected`, first in
        the queue. The caller commits the session's own change in the same transaction."""
        now = utcnow()
        row = {
            "id": new_id(), "sha256": sha256, "kind": kind, "mime": mime, "bytes": size,
            "filename": f"live-{live_session_id}", "status": Status.IN_REVIEW, "source": "live",
            "width": (analysis.evidence.get("media") or {}).get("width"),
            "height": (analysis.evidence.get("media") or {}).get("height"),
            "duration": (analysis.evidence.get("media") or {}).get("duration"),
            "request_id": None, "client_id": client_id, "external_id": external_id,
            "metadata": {"live_session_id": live_session_id}, "idempotency_key": None,
            "anonymous": False, "created_at": now, "updated_at": now,
        }
        session.connection().execute(insert(Upload.__table__), row)
        upload = Upload(**{("metadata_json" if k == "metadata" else k): v for k, v in row.items()})
        analysis.upload_id = upload.id
        session.add(analysis)
        routing = Routing(Status.IN_REVIEW, "live_suspected")
        _open_review_item(session, upload, routing, now, review_due_seconds)
        audit(session, "live.suspected", actor, upload_id=upload.id, after=Status.IN_REVIEW, at=now,
              detail={"live_session_id": live_session_id, "score": analysis.score, "label": analysis.label,
                      "model": f"{analysis.model_name} {analysis.model_version}"})
        return upload

    def live_review_committed(self, upload: Upload) -> None:
        """After the caller committed live_review's transaction: count it and tell the listeners."""
        metrics.VERDICTS.labels(label="live_suspected", status=Status.IN_REVIEW).inc()
        self._notify(upload, Status.IN_REVIEW)

    # --- people -----------------------------------------------------------------------------

    def decide(self, session: Session, item_id: int, user: Reviewer, verdict: str,
               note: str | None = None) -> Decision:
        """Decide the item `user` holds. A moderator's `inconclusive` escalates: the item goes back
        to the queue for admins only; an admin's verdict is final (it can still be revised).
        Raises Conflict when the item is not claimed by `user`."""
        verdict, note = _check_verdict(verdict, note)
        now = utcnow()
        item = session.get(ReviewItem, item_id)
        if item is None:
            raise LookupError(item_id)
        upload = session.get(Upload, item.upload_id)
        before = upload.status
        escalate = verdict == Status.INCONCLUSIVE and not user.is_admin
        values = ({"state": ReviewState.OPEN, "claimed_by": None, "claimed_until": None, "updated_at": now}
                  if escalate else {"state": ReviewState.DECIDED, "claimed_until": None, "updated_at": now})
        won = session.execute(
            update(ReviewItem)
            .where(ReviewItem.id == item_id, ReviewItem.state == ReviewState.CLAIMED,
                   ReviewItem.claimed_by == user.username)
            .values(**values).execution_options(synchronize_session=False)).rowcount == 1
        if not (won and _move(session, upload.id, (before,), verdict, now)):
            session.rollback()
            raise Conflict(f"review item {item_id} is not claimed by {user.username}")
        d = self._decision(session, upload, item_id, user, verdict, note, before, now)
        audit(session, "review.escalated" if escalate else "review.decided", user.actor, upload_id=upload.id,
              before=before, after=verdict, at=now,
              detail={"decision_id": d.id, "review_item_id": item_id, "verdict": verdict, "note": note,
                      "role": user.role, **_model_facts(upload)})
        session.commit()
        _mirror(upload, verdict, now)
        self._notify(upload, verdict)
        return d

    def revise(self, session: Session, upload_id: str, admin: Reviewer, verdict: str,
               note: str | None = None) -> Decision:
        """An admin's new verdict on an already decided upload; the earlier decision stays."""
        if not admin.is_admin:
            raise PermissionError("only an admin can revise a decision")
        verdict, note = _check_verdict(verdict, note)
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
        if item is not None and item.state != ReviewState.DECIDED:
            raise Conflict("the item is still in the queue: claim and decide it instead")
        if not _move(session, upload_id, (before,), verdict, now):
            session.rollback()
            raise Conflict("the upload changed meanwhile; reload and try again")
        d = self._decision(session, upload, item.id if item else None, admin, verdict, note, before, now,
                           revises_id=last.id)
        audit(session, "review.revised", admin.actor, upload_id=upload_id, before=before, after=verdict, at=now,
              detail={"decision_id": d.id, "revises": last.id, "verdict": verdict, "note": note,
                      "role": admin.role, **_model_facts(upload)})
        session.commit()
        _mirror(upload, verdict, now)
        self._notify(upload, verdict)
        return d

    @staticmethod
    def _decision(session: Session, upload: Upload, item_id: int | None, user: Reviewer, verdict: str,
                  note: str | None, before: str, now: datetime, revises_id: int | None = None) -> Decision:
        d = Decision(upload_id=upload.id, review_item_id=item_id, moderator=user.username, outcome=verdict,
                     note=note, created_at=now, before_status=before, after_status=verdict,
                     revises_id=revises_id, **_model_facts(upload))
        session.add(d)
        session.flush()
        return d

    # --- the platform -------------------------------------------------------------------------

    def withdraw(self, session: Session, upload: Upload, actor: str, request_id: str | None = None) -> Upload:
        """The platform withdrew the content: status `withdrawn`, an open review item closed, the
        blob removed unless another live upload has the same bytes; record and audit trail kept.
        Withdrawing twice changes nothing."""
        if upload.status == Status.WITHDRAWN:
            return upload
        now = utcnow()
        before = upload.status
        if not _move(session, upload.id, (before,), Status.WITHDRAWN, now):
            session.rollback()
            raise Conflict("the upload changed meanwhile; try again")
        session.execute(update(ReviewItem)
                        .where(ReviewItem.upload_id == upload.id,
                               ReviewItem.state.in_((ReviewState.OPEN, ReviewState.CLAIMED)))
                        .values(state=ReviewState.WITHDRAWN, updated_at=now)
                        .execution_options(synchronize_session=False))
        audit(session, "upload.withdrawn", actor, upload_id=upload.id, before=before, after=Status.WITHDRAWN,
              request_id=request_id, at=now)
        session.commit()
        _mirror(upload, Status.WITHDRAWN, now)
        if upload.review_item is not None and upload.review_item.state in (ReviewState.OPEN, ReviewState.CLAIMED):
            set_committed_value(upload.review_item, "state", ReviewState.WITHDRAWN)
        still_used = session.scalar(select(Upload.id).where(Upload.sha256 == upload.sha256,
                                                            Upload.status != Status.WITHDRAWN).limit(1))
        if still_used is None:
            self.storage.delete(upload.sha256)
        self._notify(upload, Status.WITHDRAWN)
        return upload


# --- helpers ----------------------------------------------------------------------------------

def _move(session: Session, upload_id: str, from_statuses, to_status: str, now: datetime,
          **values: Any) -> bool:
    """The one place an upload's status is changed: a conditional UPDATE whose row count says
    whether this caller won (Core, on the session's connection: the callers keep their objects
    in step themselves, see _mirror)."""
    return session.connection().execute(
        update(Upload).where(Upload.id == upload_id, Upload.status.in_(tuple(from_statuses)))
        .values(status=to_status, updated_at=now, **values)).rowcount == 1


def _mirror(upload: Upload, status: str, now: datetime) -> None:
    """Show the committed status on the caller's object without marking it dirty (a plain
    assignment would make the next flush UPDATE the row a second time)."""
    set_committed_value(upload, "status", status)
    set_committed_value(upload, "updated_at", now)


def _open_review_item(session: Session, upload: Upload, routing: Routing, now: datetime,
                      due_seconds: int) -> None:
    """One review item per upload, whatever the number of deliveries (the upload_id is unique).
    An anonymous page upload's item comes after every platform item and has no due date."""
    if routing.review_reason is None:
        return
    conn = session.connection()
    if conn.scalar(select(ReviewItem.id).where(ReviewItem.upload_id == upload.id)) is not None:
        return
    anonymous = bool(upload.anonymous)
    conn.execute(insert(ReviewItem.__table__), {
        "upload_id": upload.id, "reason": routing.review_reason,
        "priority": review_priority(routing, anonymous=anonymous), "state": ReviewState.OPEN,
        "due_at": None if anonymous else now + timedelta(seconds=due_seconds),
        "created_at": now, "updated_at": now})


def _check_verdict(verdict: str, note: str | None) -> tuple[str, str | None]:
    if verdict not in Status.VERDICTS:
        raise ValueError(f"verdict must be one of {', '.join(Status.VERDICTS)}")
    return verdict, (note or "").strip()[:NOTE_MAX] or None


def _model_facts(upload: Upload) -> dict[str, Any]:
    """What the model said about the upload when a human decided (kept with the decision)."""
    a = upload.latest_analysis
    if a is None:
        return {"model_name": None, "model_version": None, "label": None, "score": None}
    return {"model_name": a.model_name, "model_version": a.model_version, "label": a.label, "score": a.score}


def _spool(stream: IO[bytes], tmp_dir: Path, limit: int) -> tuple[Path, str, int, bytes]:
    """Copy the upload to a temp file, hashing as it goes; 413 once past `limit` bytes."""
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="upload-")
    path = Path(name)
    h = hashlib.sha256()
    size = 0
    head = b""
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, "too_large", f"upload larger than the limit of {limit} bytes",
                                   limit_bytes=limit)
                if len(head) < SNIFF_BYTES:
                    head += chunk[: SNIFF_BYTES - len(head)]
                h.update(chunk)
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, h.hexdigest(), size, head
