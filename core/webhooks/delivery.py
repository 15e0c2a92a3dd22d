"""One delivery attempt (run by the `webhooks` queue's job, workers/webhooks.py). The job carries
only the delivery id; the DB row says whether it is still pending, so a duplicate or late job is
harmless. Each attempt is recorded (status code, latency, error); a failed attempt raises so that
RQ's Retry schedules the next one."""

from __future__ import annotations

import http.client
import logging
import time
from datetime import timedelta

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from core.models import ApiClient, DeliveryState, WebhookAttempt, WebhookDelivery, utcnow
from core.settings import Settings
from core.webhooks import guard
from core.webhooks.signing import signed_headers

log = logging.getLogger(__name__)


class DeliveryFailed(Exception):
    """This attempt did not get a 2xx; RQ retries the job after the next back-off interval."""


def deliver_with(settings: Settings, engine: Engine, delivery_id: str) -> dict:
    with Session(engine, expire_on_commit=False) as session:
        d = session.get(WebhookDelivery, delivery_id)
        if d is None:
            return {"delivery_id": delivery_id, "skipped": "no such delivery"}
        if d.state != DeliveryState.PENDING:
            return {"delivery_id": delivery_id, "skipped": f"already {d.state}"}
        client = session.get(ApiClient, d.client_id)
        status: int | None = None
        error: str | None = None
        url = client.webhook_url if client is not None else None
        t0 = time.perf_counter()
        if client is None or client.revoked_at is not None or not url:
            error = "the client was revoked or has no webhook URL"
            d.attempts = len(settings.webhook_retry_intervals)  # nothing to retry
        else:
            body = d.payload.encode("utf-8")
            headers = signed_headers(client.webhook_secret or "", d.id, d.event, body)
            try:
                resp = guard.post(url, body, headers, timeout=settings.webhook_timeout,
                                  allow_private=settings.webhook_allow_private)
                status, url = resp.status, resp.url
                if not 200 <= status < 300:
                    error = f"HTTP {status}"
            except guard.OutboundRefused as e:
                error = f"refused by the outbound guard: {e}"
            except (OSError, http.client.HTTPException) as e:
                error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        latency = (time.perf_counter() - t0) * 1000.0
        session.add(WebhookAttempt(delivery_id=d.id, url=(url or "")[:2048], status_code=status,
                                   latency_ms=round(latency, 2), error=error))
        d.attempts += 1
        d.last_status_code = status
        d.last_error = error
        if error is None:
            d.state = DeliveryState.DELIVERED
            d.delivered_at = utcnow()
            d.next_attempt_at = None
        else:
            intervals = settings.webhook_retry_intervals
            if d.attempts <= len(intervals):
                d.next_attempt_at = utcnow() + timedelta(seconds=intervals[d.attempts - 1])
            else:
                d.state = DeliveryState.FAILED
                d.next_attempt_at = None
        session.commit()
        state, attempts = d.state, d.attempts
    if error is not None:
        log.info("webhook %s attempt %d failed: %s", delivery_id, attempts, error)
        if state == DeliveryState.PENDING:
            raise DeliveryFailed(error)
    return {"delivery_id": delivery_id, "state": state, "status_code": status, "attempts": attempts}
