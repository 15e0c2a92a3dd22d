"""Uploads and what happens to them: analyses, review items, decisions, the audit trail."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum, nonmember
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.models.base import Base, new_id, utcnow


class Status(StrEnum):
    """Every state an upload can be in (README.md, "Architecture"). Only core/lifecycle.py changes
    an upload's status. Members are strings, so a value read back from the database compares
    equal to its member."""

    QUEUED = "queued"
    ANALYZING = "analyzing"
    CLEARED = "cleared"
    IN_REVIEW = "in_review"
    BLOCKED = "blocked"
    CONFIRMED_FAKE = "confirmed_fake"
    AUTHENTIC = "authentic"
    INCONCLUSIVE = "inconclusive"
    WITHDRAWN = "withdrawn"
    """The platform withdrew the content (DELETE): blob removed, record and audit trail kept."""

    PENDING = nonmember((QUEUED, ANALYZING))
    """Waiting for a verdict from the detector."""
    ROUTED = nonmember((CLEARED, IN_REVIEW, BLOCKED))
    """Where the routing policy sends an analysed upload."""
    VERDICTS = nonmember((CONFIRMED_FAKE, AUTHENTIC, INCONCLUSIVE))
    """What a moderator's decision sets."""


class ReviewState(StrEnum):
    """The state of a review item (one per upload at most)."""

    OPEN = "open"
    CLAIMED = "claimed"
    DECIDED = "decided"
    WITHDRAWN = "withdrawn"
    """Closed because the platform withdrew the upload."""


class Upload(Base):
    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    """"image" or "video"."""
    mime: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger)
    filename: Mapped[str | None] = mapped_column(String(255))
    """The client's name, sanitised; metadata only, never used as a path."""
    status: Mapped[str] = mapped_column(String(32), index=True, default=Status.QUEUED)
    """A Status; written only by core/lifecycle.py."""
    source: Mapped[str] = mapped_column(String(16))
    """"page" or "api"."""
    anonymous: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """From the upload page with no account and no platform token: refused when unreadable at the
    door, reviewed after every platform item (core/policy.review_priority)."""
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    duration: Mapped[float | None] = mapped_column(Float)
    request_id: Mapped[str | None] = mapped_column(String(64))
    # For the platform API (keys, idempotency, webhooks): nullable until that issue uses them.
    client_id: Mapped[str | None] = mapped_column(String(64), index=True)
    external_id: Mapped[str | None] = mapped_column(String(255))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    metadata_json: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    enqueued_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    analyses: Mapped[list[Analysis]] = relationship(back_populates="upload", order_by="Analysis.id")
    review_item: Mapped[ReviewItem | None] = relationship(back_populates="upload")

    __table_args__ = (
        UniqueConstraint("client_id", "idempotency_key", name="uq_uploads_client_idempotency"),
        Index("ix_uploads_status_updated", "status", "updated_at"),
    )

    @property
    def latest_analysis(self) -> Analysis | None:
        return self.analyses[-1] if self.analyses else None


class Analysis(Base):
    __tablename__ = "analyses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    upload_id: Mapped[str] = mapped_column(ForeignKey("uploads.id", ondelete="CASCADE"), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(64))
    score: Mapped[float | None] = mapped_column(Float)
    label: Mapped[str] = mapped_column(String(32))
    reasons: Mapped[list[Any]] = mapped_column(JSON, default=list)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Media info and per-frame faces (boxes, landmarks, scores) from the detector."""
    timings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Milliseconds per stage (decode, detect, classify, total) plus the job's own (load)."""
    reused_from: Mapped[int | None] = mapped_column(ForeignKey("analyses.id"))
    """The analysis of identical bytes (same sha256, model and version) this one copies."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    upload: Mapped[Upload] = relationship(back_populates="analyses")

    __table_args__ = (
        UniqueConstraint("upload_id", "model_name", "model_version", name="uq_analyses_upload_model"),
        Index("ix_analyses_sha_model", "sha256", "model_name", "model_version"),
    )


class ReviewItem(Base):
    __tablename__ = "review_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    upload_id: Mapped[str] = mapped_column(ForeignKey("uploads.id", ondelete="CASCADE"), unique=True)
    reason: Mapped[str] = mapped_column(String(64))
    """"blocked", "score_in_review_band", "unreadable", "no_face", "analysis_failed"."""
    priority: Mapped[int] = mapped_column(Integer, default=0)
    """Higher first."""
    state: Mapped[str] = mapped_column(String(16), default=ReviewState.OPEN, index=True)
    """A ReviewState."""
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_until: Mapped[datetime | None]
    due_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    upload: Mapped[Upload] = relationship(back_populates="review_item")


class Decision(Base):
    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    upload_id: Mapped[str] = mapped_column(ForeignKey("uploads.id", ondelete="CASCADE"), index=True)
    review_item_id: Mapped[int | None] = mapped_column(ForeignKey("review_items.id"))
    moderator: Mapped[str] = mapped_column(String(128))
    outcome: Mapped[str] = mapped_column(String(32))
    """"confirmed_fake", "authentic", "inconclusive" (the upload statuses a verdict sets)."""
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # What the moderator saw (migration 0002): status before/after, the model's answer at the time.
    before_status: Mapped[str | None] = mapped_column(String(32))
    after_status: Mapped[str | None] = mapped_column(String(32))
    model_name: Mapped[str | None] = mapped_column(String(128))
    model_version: Mapped[str | None] = mapped_column(String(64))
    label: Mapped[str | None] = mapped_column(String(32))
    score: Mapped[float | None] = mapped_column(Float)
    revises_id: Mapped[int | None] = mapped_column(ForeignKey("decisions.id"))
    """An admin's revision points at the decision it overrides; no decision is ever deleted."""


class AuditEvent(Base):
    """Append-only: rows are inserted, never updated or deleted by the application."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    upload_id: Mapped[str | None] = mapped_column(String(32), index=True)
    actor: Mapped[str] = mapped_column(String(128))
    """"page", "api:<client>", "worker:<name>", "reconciler", "moderator:<name>", "cli:<OS user>"."""
    action: Mapped[str] = mapped_column(String(64))
    before: Mapped[str | None] = mapped_column(String(32))
    after: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    request_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
