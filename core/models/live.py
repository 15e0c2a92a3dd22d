"""Live sessions: one call participant followed segment by segment while the call runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.models.base import Base, new_id, utcnow


class LiveState:
    OPEN = "open"
    ENDED = "ended"
    ALL = (OPEN, ENDED)


class LiveVerdict:
    """The rolling verdict of a session (core/live.py)."""

    PENDING = "pending"
    """No segment analysed yet."""
    NO_SIGN = "no_sign"
    """The segments so far show no sign of a swapped face."""
    NO_FACE = "no_face"
    """No face was seen in the segments so far."""
    SUSPECTED = "suspected"
    """The rolling score crossed the review threshold: the session is in the review queue."""
    ALL = (PENDING, NO_SIGN, NO_FACE, SUSPECTED)


class SegmentState:
    QUEUED = "queued"
    ANALYZED = "analyzed"
    FAILED = "failed"
    ALL = (QUEUED, ANALYZED, FAILED)


class LiveSession(Base):
    __tablename__ = "live_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    client_id: Mapped[str] = mapped_column(String(32), index=True)
    external_id: Mapped[str | None] = mapped_column(String(255))
    webhook: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    """Send live.suspected and live.ended to the key's webhook URL."""
    state: Mapped[str] = mapped_column(String(16), default=LiveState.OPEN, index=True)
    verdict: Mapped[str] = mapped_column(String(16), default=LiveVerdict.PENDING)
    score: Mapped[float | None] = mapped_column(Float)
    """The rolling score (core/live.rolling_score)."""
    segments: Mapped[int] = mapped_column(Integer, default=0)
    """Segments received (the next segment's sequence number)."""
    upload_id: Mapped[str | None] = mapped_column(ForeignKey("uploads.id", ondelete="SET NULL"))
    """The review-queue record made when the session was first suspected."""
    suspected_at: Mapped[datetime | None]
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    ended_by: Mapped[str | None] = mapped_column(String(32))
    """"client" (DELETE or end) or "expiry"."""
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    timeline: Mapped[list[LiveSegment]] = relationship(back_populates="session", order_by="LiveSegment.seq")


class LiveSegment(Base):
    __tablename__ = "live_segments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    session_id: Mapped[str] = mapped_column(ForeignKey("live_sessions.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    start: Mapped[float] = mapped_column(Float)
    """Seconds from the start of the call, as the platform sent it."""
    duration: Mapped[float | None] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(16))
    """"video" (an MP4/WebM chunk) or "frames" (JPEG frames)."""
    mime: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))
    """The blob: the chunk, or the first of the frames (the others in `frames`)."""
    frames: Mapped[list[Any] | None] = mapped_column(JSON)
    """For "frames": [{sha256, t}] of each JPEG in order."""
    bytes: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), default=SegmentState.QUEUED)
    score: Mapped[float | None] = mapped_column(Float)
    classifier_score: Mapped[float | None] = mapped_column(Float)
    label: Mapped[str | None] = mapped_column(String(32))
    reasons: Mapped[list[Any] | None] = mapped_column(JSON)
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """Faces per frame and the occlusion check, as the detector gave them."""
    error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    analyzed_at: Mapped[datetime | None]

    session: Mapped[LiveSession] = relationship(back_populates="timeline")

    __table_args__ = (UniqueConstraint("session_id", "seq", name="uq_live_segments_session_seq"),)
