"""Webhook signatures: HMAC-SHA256 over `<timestamp>.<body>` with the client's secret.

Headers on every delivery:
    Verity-Event-Id:   the delivery id, the same on every attempt (deduplicate on it)
    Verity-Event:      upload.analyzed | upload.decided | upload.failed
    Verity-Timestamp:  unix seconds when this attempt was signed
    Verity-Signature:  v1=<hex hmac-sha256(secret, f"{timestamp}.{body}")>
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


def signature(secret: str, timestamp: int | str, body: bytes) -> str:
    mac = hmac.new(secret.encode("utf-8"), str(timestamp).encode("ascii") + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def signed_headers(secret: str, event_id: str, event: str, body: bytes, now: float | None = None) -> dict[str, str]:
    ts = int(now if now is not None else time.time())
    return {
        "Content-Type": "application/json",
        "User-Agent": "Verity-Webhooks/1",
        EVENT_ID_HEADER: event_id,
        EVENT_HEADER: event,
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: signature(secret, ts, body),
    }


def verify(secret: str, timestamp: str, sig_header: str, body: bytes, *,
           tolerance: int = defaults.WEBHOOK_SIGNATURE_TOLERANCE_SECONDS, now: float | None = None) -> bool:
    """What a receiver does (the README shows the same in a few lines)."""
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - ts) > tolerance:
        return False
    expected = signature(secret, ts, body)
    return any(hmac.compare_digest(expected, part.strip()) for part in sig_header.split(","))
