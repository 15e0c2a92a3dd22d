"""Webhook signatures: HMAC-SHA256 with the client's secret over the timestamp, the event id, the
event type and the body, so that none of them can be changed or replayed under another id.

Headers on every delivery:
    Verity-Event-Id:   the delivery id, the same on every attempt (deduplicate on it)
    Verity-Event:      upload.analyzed | upload.decided | upload.failed
    Verity-Timestamp:  unix seconds when this attempt was signed
    Verity-Signature:  v2=<hex hmac-sha256(secret, f"{timestamp}.{event_id}.{event}.{body}")>

v1 (`{timestamp}.{body}` only) is no longer sent: a delivery captured on the way could be
replayed with a fresh Verity-Event-Id, which a receiver deduplicating on that header would take
for a new event.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from core import defaults

EVENT_ID_HEADER = "Verity-Event-Id"
EVENT_HEADER = "Verity-Event"
TIMESTAMP_HEADER = "Verity-Timestamp"
SIGNATURE_HEADER = "Verity-Signature"
SCHEME = "v2"


def signed_content(timestamp: int | str, event_id: str, event: str, body: bytes) -> bytes:
    return f"{timestamp}.{event_id}.{event}.".encode() + body


def signature(secret: str, timestamp: int | str, event_id: str, event: str, body: bytes) -> str:
    mac = hmac.new(secret.encode("utf-8"), signed_content(timestamp, event_id, event, body), hashlib.sha256)
    return f"{SCHEME}=" + mac.hexdigest()


def signed_headers(secret: str, event_id: str, event: str, body: bytes, now: float | None = None) -> dict[str, str]:
    ts = int(now if now is not None else time.time())
    return {
        "Content-Type": "application/json",
        "User-Agent": "Verity-Webhooks/2",
        EVENT_ID_HEADER: event_id,
        EVENT_HEADER: event,
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: signature(secret, ts, event_id, event, body),
    }


def verify(secret: str, headers, body: bytes, *,
           tolerance: int = defaults.WEBHOOK_SIGNATURE_TOLERANCE_SECONDS, now: float | None = None) -> bool:
    """What a receiver does with a delivery's headers and raw body (the README shows the same)."""
    try:
        ts = int(headers.get(TIMESTAMP_HEADER, ""))
    except (TypeError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - ts) > tolerance:
        return False
    expected = signature(secret, ts, headers.get(EVENT_ID_HEADER, ""), headers.get(EVENT_HEADER, ""), body)
    return any(hmac.compare_digest(expected, part.strip())
               for part in headers.get(SIGNATURE_HEADER, "").split(","))
