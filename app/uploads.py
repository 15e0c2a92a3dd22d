"""Accepting an upload: validate -> store blob -> row `queued` -> COMMIT -> enqueue (DESIGN.md).

Shared by the browser page and the API so both enforce the same door. The platform-API issue
passes client_id / external_id / metadata / idempotency_key through `accept_upload`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import IO, Any

from flask import current_app
from sqlalchemy import insert
from werkzeug.utils import secure_filename

from app import metrics
from app.db import get_session
from app.errors import ApiError, request_id
from app.models import AuditEvent, Status, Upload, new_id, utcnow
from app.queue import enqueue_analysis
from workers.detector.media import UnreadableMedia, probe, sniff

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


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
                if len(head) < 8192:
                    head += chunk[: 8192 - len(head)]
                h.update(chunk)
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, h.hexdigest(), size, head


def accept_upload(stream: IO[bytes], filename: str | None, source: str, *,
                  client_id: str | None = None, external_id: str | None = None,
                  metadata: dict[str, Any] | None = None, idempotency_key: str | None = None,
                  actor: str | None = None) -> Upload:
    settings = current_app.config["VERITY"]
    path, sha, size, head = _spool(stream, settings.tmp_dir, settings.max_upload_bytes)
    try:
        if size == 0:
            metrics.REJECTED.labels(reason="empty").inc()
            raise ApiError(422, "unreadable", "the file is empty", reason="empty")
        sniffed = sniff(head)
        if sniffed is None:
            metrics.REJECTED.labels(reason="unsupported_type").inc()
            raise ApiError(415, "unsupported_type",
                           "not an allowed type (JPEG, PNG, WebP, GIF, MP4, MOV, WebM, MKV), judged from the bytes")
        kind, mime = sniffed
        try:
            info = probe(path, kind)
        except UnreadableMedia as e:
            metrics.REJECTED.labels(reason="unreadable").inc()
            raise ApiError(422, "unreadable", e.message, reason=e.reason) from None
        current_app.extensions["verity.storage"].put_file(sha, path)
    finally:
        path.unlink(missing_ok=True)

    now = utcnow()
    row = {
        "id": new_id(), "sha256": sha, "kind": kind, "mime": mime, "bytes": size,
        "filename": secure_filename(filename or "")[:255] or None, "status": Status.QUEUED,
        "source": source, "width": info.width, "height": info.height, "duration": info.duration,
        "request_id": request_id(), "client_id": client_id, "external_id": external_id,
        "metadata": metadata, "idempotency_key": idempotency_key, "created_at": now, "updated_at": now,
    }
    session = get_session()
    # Two plain INSERTs on the session's transaction: a third of the CPU of the ORM unit of work
    # on this, the hottest write path (bench/service.py ingest).
    conn = session.connection()
    conn.execute(insert(Upload.__table__), row)
    conn.execute(insert(AuditEvent.__table__), {
        "upload_id": row["id"], "actor": actor or source, "action": "upload.accepted", "before": None,
        "after": Status.QUEUED, "request_id": row["request_id"], "created_at": now,
        "detail": {"sha256": sha, "bytes": size, "kind": kind, "mime": mime}})
    session.commit()  # the record exists before the queue hears of it
    upload = Upload(**{("metadata_json" if k == "metadata" else k): v for k, v in row.items()})
    metrics.UPLOADS.labels(source=source, kind=kind).inc()
    try:
        enqueue_analysis(settings, current_app.extensions["verity.redis"], upload.id, fresh=True)
    except Exception:
        # Not lost: the row is `queued`, and the reconciler enqueues it once it is overdue.
        log.exception("enqueue failed for upload %s; the reconciler will retry it", upload.id)
        metrics.ENQUEUE_FAILURES.inc()
    return upload
