"""The known-fakes bank: perceptual hashes of media confirmed as manipulated, matched against every
new upload before the detector runs (core/bank.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, new_id, utcnow


class BankSource:
    DECISION = "decision"
    """A moderator's confirmed-fake decision (removed again if an admin revises it)."""
    CLI = "cli"
    """`verity bank add PATH`."""
    IMPORT = "import"
    """`verity bank import FILE` (hashes only, from another bank)."""

    ALL = (DECISION, CLI, IMPORT)


class BankEntry(Base):
    __tablename__ = "bank_entries"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16))
    """"image" or "video"."""
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    """Of the exact bytes, when known (not for imported hashes)."""
    pdq: Mapped[str | None] = mapped_column(String(64))
    """An image's PDQ hash (64 hex)."""
    pdq_quality: Mapped[int | None] = mapped_column(Integer)
    pdq_trims: Mapped[list[Any] | None] = mapped_column(JSON)
    """PDQ of the picture with its borders trimmed (detector/perceptual.ENTRY_BORDER_TRIMS): matched too."""
    vpdq: Mapped[list[Any] | None] = mapped_column(JSON)
    """A video's vPDQ frames, as ThreatExchange writes them: ["<hex>,<quality>,<seconds>", ...]."""
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    """sha256 of the entry's signal (its PDQ hash, its vPDQ frames, or its bytes' sha256): the same
    signal is never entered twice."""
    source: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    upload_id: Mapped[str | None] = mapped_column(ForeignKey("uploads.id", ondelete="SET NULL"), index=True)
    """The upload it was made from (a decision, or `bank add` of a file Verity has)."""
    decision_id: Mapped[int | None] = mapped_column(ForeignKey("decisions.id", ondelete="SET NULL"))
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow, index=True)
    """Moves on every change: the workers rebuild their index when the latest one moves."""
    removed_at: Mapped[datetime | None]
    """Entries are never deleted (the audit trail names them); a removed one no longer matches."""
    removed_by: Mapped[str | None] = mapped_column(String(128))

    __table_args__ = (Index("ix_bank_entries_removed", "removed_at"),)

    @property
    def active(self) -> bool:
        return self.removed_at is None
