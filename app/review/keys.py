"""Admin pages for the platform API keys (/review/admin/keys): create a key (shown once, in the
response to the POST and nowhere else: not in the session, not in a redirect, not in a log),
change its settings, revoke it, and read its webhook delivery log with a redeliver button.

The rules are core/clients.py's and core/webhooks/', the same ones `verity key create` / `revoke` and
`verity webhooks redeliver` apply; the pages add an audit event with the admin's name for each
change (the CLI has no account to name).
"""

from __future__ import annotations

from typing import Any

from flask import abort, current_app, make_response, redirect, render_template, request, url_for
from flask_login import current_user
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from app.auth import role_required
from app.db import get_session
from app.errors import request_id
from app.review.views import bp
from core import defaults, overrides
from core.clients import (
    ClientError,
    NewKey,
    audit_key_event,
    changes_detail,
    create_client,
    creation_detail,
    list_clients,
    revoke_client,
    update_client,
)
from core.models import ApiClient, DeliveryState, ReviewItem, WebhookDelivery
from core.webhooks.outbox import redeliver


def _client_or_404(client_id: str) -> ApiClient:
    c = get_session().get(ApiClient, client_id) if client_id.isalnum() and len(client_id) <= 32 else None
    if c is None:
        abort(404, f"no API client {client_id}")
    return c


def _audit(action: str, c: ApiClient, detail: dict[str, Any], upload_id: str | None = None) -> None:
    """One audit event naming the admin; never the key or the webhook secret."""
    audit_key_event(get_session(), c, action, current_user.actor, detail, upload_id=upload_id,
                    request_id=request_id())


def _text(form, field: str) -> str | None:
    return (form.get(field) or "").strip() or None


def _threshold(form, field: str, label: str) -> float | None:
    """A blank field is no override; the range rule is core.clients.check_thresholds'."""
    v = _text(form, field)
    if v is None:
        return None
    try:
        return float(v)
    except ValueError:
        raise ClientError(f"{label} must be a number between 0 and 1, got {v!r}") from None


def _delivery_counts(client_ids: list[str] | None = None) -> dict[str, dict[str, int]]:
    q = select(WebhookDelivery.client_id, WebhookDelivery.state, func.count()).group_by(
        WebhookDelivery.client_id, WebhookDelivery.state)
    if client_ids is not None:
        q = q.where(WebhookDelivery.client_id.in_(client_ids))
    out: dict[str, dict[str, int]] = {}
    for client_id, state, n in get_session().execute(q):
        out.setdefault(client_id, {})[state] = n
    return out


def _no_store(resp):
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.route("/admin/keys", methods=["GET", "POST"], endpoint="keys")
@role_required("admin")
def keys_page():
    s = get_session()
    settings = current_app.config["VERITY"]
    error: str | None = None
    new: NewKey | None = None
    if request.method == "POST":
        f = request.form
        try:
            new = create_client(s, f.get("name", ""), webhook_url=_text(f, "webhook_url"),
                                rate_limit=_text(f, "rate_limit"), show_score=f.get("show_score") == "on",
                                allow_private_webhook=settings.webhook_allow_private)
        except ClientError as e:
            s.rollback()
            error = str(e)
        else:
            c = new.client
            _audit("key.created", c, creation_detail(c))
    html = render_template("review/keys.html", clients=list_clients(s), counts=_delivery_counts(), new=new,
                           error=error, form=request.form if error else {}, default_rate=settings.api_rate_limit,
                           allow_private=settings.webhook_allow_private)
    # The new key is in this response only: no redirect carries it, and no cache keeps it.
    return _no_store(make_response(html, 400 if error else 200))


@bp.route("/admin/keys/<client_id>", methods=["GET", "POST"], endpoint="key")
@role_required("admin")
def key_page(client_id: str):
    s = get_session()
    settings = current_app.config["VERITY"]
    c = _client_or_404(client_id)
    error: str | None = None
    changed: dict[str, tuple[Any, Any]] | None = None
    secret: str | None = None
    if request.method == "POST":
        f = request.form
        had_webhook = bool(c.webhook_url)
        try:
            changed = update_client(
                s, c, webhook_url=_text(f, "webhook_url"), rate_limit=_text(f, "rate_limit"),
                show_score=f.get("show_score") == "on",
                review_threshold=_threshold(f, "review_threshold", "the review threshold"),
                block_threshold=_threshold(f, "block_threshold", "the block threshold"),
                allow_private_webhook=settings.webhook_allow_private)
        except ClientError as e:
            s.rollback()
            error = str(e)
        else:
            if changed:
                _audit("key.updated", c, changes_detail(changed))
            if not had_webhook and c.webhook_url:
                # The signing secret was made with the key but, without a webhook, never shown.
                secret = c.webhook_secret

    state = request.args.get("state")
    state = state if state in DeliveryState.ALL else None
    page = max(1, request.args.get("page", 1, type=int) or 1)
    per = defaults.REVIEW_PAGE_SIZE
    q = select(WebhookDelivery).where(WebhookDelivery.client_id == c.id)
    if state:
        q = q.where(WebhookDelivery.state == state)
    rows = s.scalars(q.options(selectinload(WebhookDelivery.attempt_log))
                     .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
                     .limit(per + 1).offset((page - 1) * per)).all()
    deliveries = rows[:per]
    upload_ids = {d.upload_id for d in deliveries}
    items = dict(s.execute(select(ReviewItem.upload_id, ReviewItem.id)
                           .where(ReviewItem.upload_id.in_(upload_ids))).all()) if upload_ids else {}
    counts = _delivery_counts([c.id]).get(c.id, {})
    r = overrides.effective_routing(s, settings)
    html = render_template(
        "review/key.html", c=c, error=error, changed=changed, secret=secret, deliveries=deliveries,
        review_items=items, counts=counts, total=sum(counts.values()), state=state, states=DeliveryState.ALL,
        page=page, has_more=len(rows) > per, default_rate=settings.api_rate_limit, routing=r,
        allow_private=settings.webhook_allow_private, form=request.form if error else None,
        revoked=request.args.get("revoked"), redelivered=request.args.get("redelivered"),
        later=request.args.get("later"))
    return _no_store(make_response(html, 400 if error else 200))


@bp.post("/admin/keys/<client_id>/revoke", endpoint="key_revoke")
@role_required("admin")
def key_revoke(client_id: str):
    c = _client_or_404(client_id)
    was_active = c.revoked_at is None
    revoke_client(get_session(), c.id)
    if was_active:
        _audit("key.revoked", c, {"revoked_at": c.revoked_at.isoformat()})
    return redirect(url_for("review.key", client_id=c.id, revoked=1))


@bp.post("/admin/keys/<client_id>/deliveries/<delivery_id>/redeliver", endpoint="key_redeliver")
@role_required("admin")
def key_redeliver(client_id: str, delivery_id: str):
    s = get_session()
    c = _client_or_404(client_id)
    d = s.get(WebhookDelivery, delivery_id) if delivery_id.isalnum() and len(delivery_id) <= 32 else None
    if d is None or d.client_id != c.id:
        abort(404, f"no delivery {delivery_id} for {c.name}")
    if c.revoked_at is not None or not c.webhook_url:
        # The delivery job would refuse it at once (core/webhooks/delivery.py).
        abort(409, "this key is revoked or has no webhook URL: a redelivery would be refused")
    later = False
    try:
        redeliver(s, current_app.config["VERITY"], current_app.extensions["verity.redis"], d)
    except RedisError:
        # The row is pending again (committed first); the webhook reconciler enqueues it.
        s.rollback()
        later = True
    _audit("webhook.redelivered", c, {"delivery_id": d.id, "event": d.event}, upload_id=d.upload_id)
    args = {k: v for k, v in (("state", request.args.get("state")), ("page", request.args.get("page"))) if v}
    return redirect(url_for("review.key", client_id=c.id, redelivered=d.id, **({"later": 1} if later else {}),
                            **args))
