"""Client platforms and their API keys (issue 5). A key is shown once and stored as its sha256."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, String
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, new_id, utcnow


class ApiClient(Base):
    """One platform (one key). Revoked keys are kept so that their uploads and deliveries keep a
    named owner; a revoked key never authenticates again."""

    __tablename__ = "api_clients"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    """sha256 hex of the whole key; the key itself is never stored."""
    key_prefix: Mapped[str] = mapped_column(String(16))
    """The first characters of the key, to tell keys apart in lists and logs."""
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    webhook_secret: Mapped[str | None] = mapped_column(String(128))
    """HMAC-SHA256 signing secret for this client's webhooks (needed in clear to sign)."""
    show_score: Mapped[bool] = mapped_column(Boolean, default=False)
    """Whether results include the raw score and the evidence summary."""
    rate_limit: Mapped[str | None] = mapped_column(String(64))
    """Flask-Limiter syntax ("100/minute"); None: the operator's VERITY_API_RATE_LIMIT."""
    review_threshold: Mapped[float | None] = mapped_column(Float)
    """Policy override for this client's uploads; None: the operator's threshold."""
    block_threshold: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]

    @property
    def active(self) -> bool:
        return self.revoked_at is None
