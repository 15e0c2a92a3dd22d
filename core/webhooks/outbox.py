"""The outbox: turn a committed status change into a delivery row, then a job on `webhooks`;
redeliver; and the reconciler that finds deliveries Redis forgot (restart, flush, lost enqueue)."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

from redis import Redis
from rq import Queue, Retry
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from core import defaults
from core.models import ApiClient, DeliveryState, ReviewItem, Status, Upload, WebhookDelivery, utcnow
from core.queue import live_job_status
from core.representation import upload_body
from core.settings import Settings

log = logging.getLogger(__name__)

JOB_FUNC = "workers.webhooks.deliver"
LOCK_KEY = "verity:webhooks:reconciler:lock"
ANALYZED, DECIDED, FAILED = "upload.analyzed", "upload.decided", "upload.failed"
EVENT_STATUSES = (*Status.ROUTED, *Status.VERDICTS)
"""Statuses a platform hears of; the others (queued, analyzing, withdrawn) send nothing."""


def job_id(delivery_id: str) -> str:
    return f"webhook-{delivery_id}"


def event_for(session: Session, upload_id: str, status: str) -> str | None:
    if status in Status.VERDICTS:
        return DECIDED
    if status in Status.ROUTED:
        reason = session.scalar(select(ReviewItem.reason).where(ReviewItem.upload_id == upload_id))
        return FAILED if status == Status.IN_REVIEW and reason == "analysis_failed" else ANALYZED
    return None


class Outbox:
    """The lifecycle listener of a process: one delivery row per event for a client with a
    webhook URL, committed in its own transaction after the status change it reports, then a
    job on `webhooks`. Subscribe it where the process starts:
    `lifecycle.subscribe(Outbox(settings, engine, redis).on_status_change)`."""

    def __init__(self, settings: Settings, engine: Engine, redis: Redis) -> None:
        self.settings = settings
        self.engine = engine
        self.redis = redis

    def on_status_change(self, upload: Upload, status: str) -> WebhookDelivery | None:
        if not upload.client_id or status not in EVENT_STATUSES:
            return None
        if upload.source == "live" and status in Status.ROUTED:
            return None  # the session's own live.suspected says it (on_live_event); the verdict is upload.decided
        with self.engine.connect() as conn:  # most clients poll: one light look-up, no ORM session
            hooked = conn.execute(select(ApiClient.id).where(
                ApiClient.id == upload.client_id, ApiClient.webhook_url.is_not(None),
                ApiClient.webhook_url != "", ApiClient.revoked_at.is_(None))).first()
        if hooked is None:
            return None
        with Session(self.engine, expire_on_commit=False) as session:
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
            enqueue_delivery(self.settings, self.redis, delivery.id, attempts_done=0)
        except Exception:
            log.exception("enqueue of webhook %s failed; the webhook reconciler will send it", delivery.id)
        return delivery


    def on_live_event(self, live, event: str) -> WebhookDelivery | None:
        """live.suspected / live.ended of a session whose key has a webhook URL (and that did
        not opt out): a delivery row with the session as the body, then a job, as for uploads."""
        from core.live import live_out
        from core.models import LiveSegment

        if not live.webhook:
            return None
        with Session(self.engine, expire_on_commit=False) as session:
            client = session.get(ApiClient, live.client_id)
            if client is None or not client.webhook_url or client.revoked_at is not None:
                return None
            segments = session.scalars(select(LiveSegment).where(LiveSegment.session_id == live.id)).all()
            upload = session.get(Upload, live.upload_id) if live.upload_id else None
            body = live_out(live, segments, show_score=client.show_score, upload=upload).model_dump_json()
            delivery = WebhookDelivery(client_id=client.id, upload_id=live.id, event=event, payload=body,
                                       state=DeliveryState.PENDING, attempts=0, next_attempt_at=utcnow())
            session.add(delivery)
            session.commit()
        try:
            enqueue_delivery(self.settings, self.redis, delivery.id, attempts_done=0)
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
