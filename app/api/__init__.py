"""Platform API v1 (`/api/v1`, issue 5): Bearer keys, idempotent submits, batch, long-poll,
withdraw, webhook delivery log; per-key rate limits and queue back-pressure. Exempt from the
page's CSRF: nothing here is cookie-authenticated.

Schemas: core/schemas.py (pydantic). Spec: app/api/openapi.py, served at
/api/v1/openapi.json and committed as app/openapi.json (`python scripts/dump_openapi.py`).
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import IO, Any

from flask import Blueprint, current_app, g, jsonify, request, url_for
from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from app.api.auth import current_client
from app.api.limits import check_backpressure, make_limiter
from app.db import get_lifecycle, get_session
from app.errors import error_response, request_id
from core import defaults
from core.errors import ApiError
from core.models import ApiClient, DeliveryState, Status, Upload, WebhookDelivery
from core.representation import VIEW_OPTIONS, upload_body, upload_links
from core.schemas import (
    BatchAccepted,
    BatchItem,
    ClientOut,
    DeliveryList,
    DeliveryOut,
    Error,
    JsonRefused,
    PageTokenIn,
    PageTokenOut,
    SubmitOptions,
    UploadAccepted,
    parse_bounded_json,
)

bp = Blueprint("api_v1", __name__, url_prefix="/api/v1")

PUBLIC_ENDPOINTS = {"api_v1.openapi"}
IDEMPOTENCY_HEADER = "Idempotency-Key"
# 200, not the column's 255: a batch stores "<key>#<index>" for each of its files.
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")


def _json(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None):
    resp = current_app.response_class(model.model_dump_json(), status=status, mimetype="application/json")
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def _client() -> ApiClient:
    c = current_client()
    assert c is not None  # _authenticate ran
    return c


@bp.before_request
def _authenticate():
    if request.endpoint in PUBLIC_ENDPOINTS:
        return
    if current_client() is None:
        has = bool(request.headers.get("Authorization"))
        raise ApiError(401, "unauthorized",
                       "invalid or revoked API key" if has else "send `Authorization: Bearer <API key>`")
    return


@bp.errorhandler(ApiError)
def _api_error(e: ApiError):
    resp, status = error_response(e.status, e.code, e.message, **e.extra)
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="verity"'
    if "retry_after" in e.extra:
        resp.headers["Retry-After"] = g.verity_retry_after = str(e.extra["retry_after"])
    return resp, status


# --- submit -----------------------------------------------------------------------------------

class _HashingReader:
    """Wraps the request stream; hashes whatever the door reads (to compare idempotent retries)."""

    def __init__(self, stream: IO[bytes]):
        self.stream = stream
        self.h = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        chunk = self.stream.read(n)
        self.h.update(chunk)
        return chunk

    def drain(self) -> str:
        while self.read(1 << 20):
            pass
        return self.h.hexdigest()


def _options(source: dict[str, Any]) -> SubmitOptions:
    try:
        return SubmitOptions.model_validate({k: source[k] for k in ("external_id", "metadata", "filename")
                                            if source.get(k) is not None})
    except ValidationError as e:
        refused = [err["msg"] for err in e.errors() if err["type"] == "json_refused"]
        if refused:
            raise ApiError(400, "invalid_request", refused[0]) from None
        raise ApiError(422, "invalid_request", "; ".join(f"{'.'.join(map(str, err['loc'])) or 'body'}: "
                                                          f"{err['msg']}" for err in e.errors())) from None


def _idempotency_key() -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.match(key):
        raise ApiError(400, "invalid_idempotency_key", "Idempotency-Key must be 1-200 visible ASCII characters")
    return key


def _same_request(existing: Upload, sha: str, opts: SubmitOptions) -> bool:
    return (existing.sha256 == sha and existing.external_id == opts.external_id
            and (existing.metadata_json or None) == (opts.metadata or None))


def _find_idempotent(client: ApiClient, key: str) -> Upload | None:
    return get_session().scalar(select(Upload).where(Upload.client_id == client.id,
                                                     Upload.idempotency_key == key))


def _mismatch(key: str) -> ApiError:
    return ApiError(422, "idempotency_key_reused",
                    f"Idempotency-Key {key!r} was used with a different request body")


def submit(stream: IO[bytes], opts: SubmitOptions, client: ApiClient, idem_key: str | None,
           filename: str | None) -> tuple[Upload, bool]:
    """Accept one upload for `client`; with an idempotency key, a retry returns the first upload
    (replayed=True) and a different body under the same key is refused (422)."""
    reader = _HashingReader(stream)
    if idem_key is not None:
        existing = _find_idempotent(client, idem_key)
        if existing is not None:
            if not _same_request(existing, reader.drain(), opts):
                raise _mismatch(idem_key)
            return existing, True
    try:
        upload = get_lifecycle().accept(
            get_session(), reader, opts.filename or filename, "api", actor=f"api:{client.name}",
            request_id=request_id(), client_id=client.id, external_id=opts.external_id,
            metadata=opts.metadata, idempotency_key=idem_key)
    except IntegrityError:
        # A concurrent request with the same key committed first (unique client_id, key): its
        # upload is the answer, and this request enqueued nothing.
        get_session().rollback()
        existing = _find_idempotent(client, idem_key) if idem_key is not None else None
        if existing is None:
            raise
        if not _same_request(existing, reader.drain(), opts):
            raise _mismatch(idem_key) from None
        return existing, True
    return upload, False


def _accepted(upload: Upload) -> UploadAccepted:
    return UploadAccepted(id=upload.id, status=upload.status, links=upload_links(upload.id))


@bp.post("/uploads")
def create_upload():
    client = _client()
    check_backpressure()
    idem_key = _idempotency_key()
    mimetype = request.mimetype or ""
    if mimetype == "multipart/form-data":
        f = request.files.get("file")
        if f is None:
            raise ApiError(400, "missing_file", "send the media as multipart/form-data in the field `file`, "
                                                "or as the raw request body with its Content-Type")
        opts = _options({**request.args.to_dict(), **request.form.to_dict()})
        stream, filename = f.stream, f.filename
    elif mimetype and mimetype != "application/x-www-form-urlencoded":
        opts = _options(request.args.to_dict())
        stream, filename = request.stream, None
    else:
        raise ApiError(400, "missing_file", "send the media as multipart/form-data in the field `file`, "
                                            "or as the raw request body with its Content-Type")
    upload, replayed = submit(stream, opts, client, idem_key, filename)
    body = _accepted(upload)
    headers = {"Location": body.links.self}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return _json(body, 202, headers)


@bp.post("/uploads:batch")
def create_upload_batch():
    client = _client()
    settings = current_app.config["VERITY"]
    request.max_content_length = (settings.max_upload_bytes * defaults.API_BATCH_MAX_FILES
                                  + defaults.UPLOAD_FORM_OVERHEAD_BYTES)
    check_backpressure()
    idem_key = _idempotency_key()
    if request.mimetype != "multipart/form-data":
        raise ApiError(400, "missing_file", "send the files as multipart/form-data, each in a field `file`")
    files = request.files.getlist("file")
    if not files:
        raise ApiError(400, "missing_file", "send the files as multipart/form-data, each in a field `file`")
    if len(files) > defaults.API_BATCH_MAX_FILES:
        raise ApiError(413, "too_many_files", f"at most {defaults.API_BATCH_MAX_FILES} files per batch",
                       limit_files=defaults.API_BATCH_MAX_FILES)
    try:
        items = parse_bounded_json(request.form.get("items") or "[]", "`items`",
                                   max_depth=defaults.API_JSON_MAX_DEPTH + 2)
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise ValueError
    except JsonRefused as e:
        raise ApiError(400, "invalid_request", str(e)) from None
    except ValueError:
        raise ApiError(422, "invalid_request", "`items` must be a JSON array of objects "
                                               "({external_id, metadata}) in the order of the files") from None
    if len(items) > len(files):
        raise ApiError(422, "invalid_request", "`items` has more entries than there are files")
    out: list[BatchItem] = []
    for i, f in enumerate(files):
        try:
            opts = _options(items[i] if i < len(items) else {})
            upload, _ = submit(f.stream, opts, client, f"{idem_key}#{i}" if idem_key else None, f.filename)
            out.append(BatchItem(index=i, id=upload.id, status=upload.status, links=upload_links(upload.id)))
        except ApiError as e:
            get_session().rollback()
            out.append(BatchItem(index=i, error=Error(code=e.code, message=e.message, request_id=request_id())))
    return _json(BatchAccepted(items=out), 202)


# --- read -------------------------------------------------------------------------------------

def _own_upload(upload_id: str) -> Upload:
    client = _client()
    upload = get_session().get(Upload, upload_id, options=VIEW_OPTIONS) \
        if upload_id.isalnum() and len(upload_id) <= 32 else None
    if upload is None or upload.client_id != client.id:
        raise ApiError(404, "not_found", f"no upload {upload_id}")
    return upload


def _wait_seconds() -> float:
    raw = request.args.get("wait")
    if raw in (None, ""):
        return 0.0
    try:
        w = float(raw)
    except ValueError:
        raise ApiError(400, "invalid_request", "wait must be a number of seconds") from None
    if not 0 <= w <= defaults.API_MAX_WAIT_SECONDS:
        raise ApiError(400, "invalid_request", f"wait must be within [0, {defaults.API_MAX_WAIT_SECONDS}] seconds")
    return w


@bp.get("/uploads/<upload_id>")
def get_upload(upload_id: str):
    wait = _wait_seconds()
    upload = _own_upload(upload_id)
    deadline = time.monotonic() + wait
    session = get_session()
    status = upload.status
    while status in Status.PENDING and time.monotonic() < deadline:
        session.commit()  # end the read transaction so the next read sees the worker's commit
        time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
        status = session.scalar(select(Upload.status).where(Upload.id == upload.id))
    if status != upload.status:
        session.expire_all()
        upload = session.get(Upload, upload.id, options=VIEW_OPTIONS)
    return jsonify(upload_body(upload, show_score=_client().show_score))


@bp.get("/uploads")
def list_uploads():
    client = _client()
    q = select(Upload).where(Upload.client_id == client.id)
    ext = request.args.get("external_id")
    if ext is not None:
        q = q.where(Upload.external_id == ext)
    try:
        limit = int(request.args.get("limit", "50"))
    except ValueError:
        raise ApiError(400, "invalid_request", "limit must be an integer") from None
    if not 1 <= limit <= 100:
        raise ApiError(400, "invalid_request", "limit must be within [1, 100]")
    rows = get_session().scalars(q.options(selectinload(Upload.analyses), selectinload(Upload.review_item))
                                 .order_by(Upload.created_at.desc()).limit(limit)).all()
    return jsonify({"items": [upload_body(u, show_score=client.show_score) for u in rows]})


@bp.delete("/uploads/<upload_id>")
def withdraw_upload(upload_id: str):
    """The platform withdrew the content: blob removed (unless another live upload has the same
    bytes), record and audit trail kept, status `withdrawn`, open review item closed."""
    client = _client()
    upload = get_lifecycle().withdraw(get_session(), _own_upload(upload_id), f"api:{client.name}", request_id())
    return jsonify(upload_body(upload, show_score=client.show_score))


@bp.post("/page-tokens")
def create_page_token():
    """A short-lived token that lets one of the platform's signed-in users upload through the page
    (`/?token=...`) for this key: its uploads count as the platform's (webhooks, thresholds)."""
    from datetime import UTC, datetime

    from app.page.tokens import mint_page_token

    client = _client()
    try:
        body = PageTokenIn.model_validate(request.get_json(silent=True) or {})
    except ValidationError as e:
        raise ApiError(422, "invalid_request", "; ".join(f"{'.'.join(map(str, err['loc'])) or 'body'}: "
                                                          f"{err['msg']}" for err in e.errors())) from None
    token, expires = mint_page_token(current_app.config["VERITY"].secret_key, client.id, body.subject)
    return _json(PageTokenOut(token=token, expires_at=datetime.fromtimestamp(expires, UTC),
                              page_url=url_for("page.index", token=token)), 201)


@bp.get("/me")
def me():
    c = _client()
    return _json(ClientOut(id=c.id, name=c.name, key_prefix=c.key_prefix, webhook_url=c.webhook_url,
                           show_score=c.show_score,
                           rate_limit=c.rate_limit or current_app.config["VERITY"].api_rate_limit,
                           review_threshold=c.review_threshold, block_threshold=c.block_threshold))


# --- webhook delivery log ---------------------------------------------------------------------

def delivery_out(d: WebhookDelivery, *, with_attempts: bool = False) -> DeliveryOut:
    return DeliveryOut(
        id=d.id, event=d.event, upload_id=d.upload_id, state=d.state, attempts=d.attempts,
        next_attempt_at=d.next_attempt_at, last_status_code=d.last_status_code, last_error=d.last_error,
        created_at=d.created_at, delivered_at=d.delivered_at,
        attempt_log=[{"url": a.url, "status_code": a.status_code, "latency_ms": a.latency_ms, "error": a.error,
                      "created_at": a.created_at} for a in d.attempt_log] if with_attempts else None,
    )


def _own_delivery(delivery_id: str) -> WebhookDelivery:
    d = get_session().get(WebhookDelivery, delivery_id) if delivery_id.isalnum() and len(delivery_id) <= 32 else None
    if d is None or d.client_id != _client().id:
        raise ApiError(404, "not_found", f"no delivery {delivery_id}")
    return d


@bp.get("/webhooks/deliveries")
def list_deliveries():
    q = select(WebhookDelivery).where(WebhookDelivery.client_id == _client().id)
    if (uid := request.args.get("upload_id")) is not None:
        q = q.where(WebhookDelivery.upload_id == uid)
    if (state := request.args.get("state")) is not None:
        if state not in DeliveryState.ALL:
            raise ApiError(400, "bad_request", f"state must be one of {', '.join(DeliveryState.ALL)}")
        q = q.where(WebhookDelivery.state == state)
    rows = get_session().scalars(q.order_by(WebhookDelivery.created_at.desc()).limit(100)).all()
    return _json(DeliveryList(items=[delivery_out(d) for d in rows]))


@bp.get("/webhooks/deliveries/<delivery_id>")
def get_delivery(delivery_id: str):
    return _json(delivery_out(_own_delivery(delivery_id), with_attempts=True))


@bp.post("/webhooks/deliveries/<delivery_id>/redeliver")
def redeliver_delivery(delivery_id: str):
    from core.webhooks.outbox import redeliver

    d = _own_delivery(delivery_id)
    redeliver(get_session(), current_app.config["VERITY"], current_app.extensions["verity.redis"], d)
    return _json(delivery_out(d), 202)


@bp.get("/openapi.json")
def openapi():
    from app.api.openapi import build_spec

    return jsonify(build_spec())


from app.api import live as _live  # noqa: F401 - the live routes, on this blueprint


def init_app(app) -> None:
    app.register_blueprint(bp)
    csrf = app.extensions.get("csrf")
    if csrf is not None:
        csrf.exempt(bp)
    app.extensions["verity.limiter"] = make_limiter(app, bp)
