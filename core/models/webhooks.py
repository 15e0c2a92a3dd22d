"""The webhook outbox: one row per event to deliver, one row per attempt (issue 5).

The row is committed in the same place as the status change it reports (after it, in the
notify hook), before any job is enqueued; the delivery jobs and the reconciler work from it, so
a Redis restart loses no webhook.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.models.base import Base, new_id, utcnow


class DeliveryState:
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    """Every attempt failed; only a redeliver sends it again."""

    ALL = (PENDING, DELIVERED, FAILED)


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    """Also the event id the receiver sees (Verity-Event-Id), stable across attempts."""
    client_id: Mapped[str] = mapped_column(String(32), index=True)
    upload_id: Mapped[str] = mapped_column(String(32), index=True)
    event: Mapped[str] = mapped_column(String(32))
    """"upload.analyzed", "upload.decided", "upload.failed"."""
    payload: Mapped[str] = mapped_column(Text)
    """The exact JSON body sent (and signed): the GET /uploads/<id> shape at the time of the event."""
    state: Mapped[str] = mapped_column(String(16), default=DeliveryState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    attempt_log: Mapped[list[WebhookAttempt]] = relationship(back_populates="delivery",
                                                             order_by="WebhookAttempt.id")

    __table_args__ = (Index("ix_webhook_deliveries_state_next", "state", "next_attempt_at"),)


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
                                             index=True)
    url: Mapped[str] = mapped_column(String(2048))
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    delivery: Mapped[WebhookDelivery] = relationship(back_populates="attempt_log")
