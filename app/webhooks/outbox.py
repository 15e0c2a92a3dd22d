"""The outbox: turn a committed status change into a delivery row, then a job on `webhooks`;
redeliver; and the reconciler that finds deliveries Redis forgot (restart, flush, lost enqueue)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from redis import Redis
from rq import Queue, Retry
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, object_session

from app.api.representation import upload_body
from app.clients.models import ApiClient
from app.models import ReviewItem, Status, Upload, utcnow
from app.queue import live_job_status
from app.settings import Settings
from app.webhooks.models import DeliveryState, WebhookDelivery

log = logging.getLogger(__name__)

JOB_FUNC = "app.webhooks.jobs.deliver"
LOCK_KEY = "verity:webhooks:reconciler:lock"
ANALYZED, DECIDED, FAILED = "upload.analyzed", "upload.decided", "upload.failed"
DECIDED_STATUSES = (Status.CONFIRMED_FAKE, Status.AUTHENTIC, Status.INCONCLUSIVE)


@dataclass
class Handles:
    engine: Engine
    redis: Redis
    settings: Settings


def handles(upload: Any | None = None) -> Handles:
    """The DB, Redis and settings of this process: the Flask app's in a request or app context,
    else the worker's context (app.notify is called from both)."""
    from flask import current_app, has_app_context

    if has_app_context():
        return Handles(current_app.extensions["verity.db"].engine, current_app.extensions["verity.redis"],
                       current_app.config["VERITY"])
    from workers.context import get_context

    ctx = get_context()
    engine = ctx.db.engine
    s = object_session(upload) if upload is not None else None
    if s is not None and s.get_bind() is not None:
        engine = s.get_bind()
    return Handles(engine, ctx.redis, ctx.settings)


def job_id(delivery_id: str) -> str:
    return f"webhook-{delivery_id}"


def event_for(session: Session, upload_id: str, status: str) -> str | None:
    if status in DECIDED_STATUSES:
        return DECIDED
    if status in (Status.CLEARED, Status.IN_REVIEW, Status.BLOCKED):
        reason = session.scalar(select(ReviewItem.reason).where(ReviewItem.upload_id == upload_id))
        return FAILED if status == Status.IN_REVIEW and reason == "analysis_failed" else ANALYZED
    return None


def on_status_change(upload: Any, status: str) -> WebhookDelivery | None:
    """The app.notify sender: one outbox row per event for a client with a webhook URL."""
    if not getattr(upload, "client_id", None):
        return None
    h = handles(upload)
    with Session(h.engine, expire_on_commit=False) as session:
        client = session.get(ApiClient, upload.client_id)
        if client is None or not client.webhook_url or client.revoked_at is not None:
            return None
        fresh = session.get(Upload, upload.id)
        if fresh is None:
            return None
        event = event_for(session, fresh.id, status)
        if event is None:
            return None
        body = json.dumps(upload_body(fresh, show_score=client.show_score), separators=(",", ":"))
        delivery = WebhookDelivery(client_id=client.id, upload_id=fresh.id, event=event, payload=body,
                                   state=DeliveryState.PENDING, attempts=0, next_attempt_at=utcnow())
        session.add(delivery)
        session.commit()  # the outbox row exists before the queue hears of it
    try:
        enqueue_delivery(h.settings, h.redis, delivery.id, attempts_done=0)
    except Exception:
        log.exception("enqueue of webhook %s failed; the webhook reconciler will send it", delivery.id)
    return delivery


def webhook_queue(settings: Settings, connection: Redis) -> Queue:
    return Queue(settings.webhook_queue, connection=connection, serializer="json")


def enqueue_delivery(settings: Settings, connection: Redis, delivery_id: str, *, attempts_done: int):
    """Enqueue a delivery job whose retries use the back-off intervals not yet spent."""
    if live_job_status(connection, job_id(delivery_id)) is not None:
        return None
    left = list(settings.webhook_retry_intervals[attempts_done:])
    return webhook_queue(settings, connection).enqueue(
        JOB_FUNC, delivery_id, job_id=job_id(delivery_id),
        retry=Retry(max=len(left), interval=left) if left else None,
        job_timeout=int(settings.webhook_timeout * 4 + 30),
        result_ttl=3600, failure_ttl=7 * 24 * 3600,
        description=f"deliver webhook {delivery_id}",
    )


def redeliver(session: Session, settings: Settings, connection: Redis, delivery: WebhookDelivery) -> None:
    """Send again from the start of the back-off (the attempt log is kept)."""
    delivery.state = DeliveryState.PENDING
    delivery.attempts = 0
    delivery.next_attempt_at = utcnow()
    delivery.delivered_at = None
    session.commit()
    enqueue_delivery(settings, connection, delivery.id, attempts_done=0)


def reconcile_deliveries(settings: Settings, engine: Engine, connection: Redis, *,
                         stuck_after: int | None = None) -> list[str]:
    """Re-enqueue pending deliveries that are overdue and have no live job; returns their ids."""
    from app import defaults

    age = defaults.WEBHOOK_STUCK_AFTER_SECONDS if stuck_after is None else stuck_after
    cutoff = utcnow() - timedelta(seconds=age)
    out: list[str] = []
    with Session(engine) as session:
        rows = session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.state == DeliveryState.PENDING,
                                          WebhookDelivery.next_attempt_at <= cutoff)
            .order_by(WebhookDelivery.next_attempt_at).limit(500)).all()
        for d in rows:
            if live_job_status(connection, job_id(d.id)) is not None:
                continue
            enqueue_delivery(settings, connection, d.id, attempts_done=d.attempts)
            out.append(d.id)
    if out:
        log.warning("webhook reconciler re-enqueued %d delivery(ies)", len(out))
    return out


def reconcile_if_due(settings: Settings, engine: Engine, connection: Redis) -> list[str] | None:
    if not connection.set(LOCK_KEY, "1", nx=True, ex=settings.reconcile_interval):
        return None
    return reconcile_deliveries(settings, engine, connection)
