"""Moderator accounts: a username, a slow password hash and a role."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Integer, String
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

from core.models.base import Base, utcnow


class Role:
    MODERATOR = "moderator"
    ADMIN = "admin"

    ALL = (MODERATOR, ADMIN)


PASSWORD_METHOD = "scrypt"
"""werkzeug's scrypt (n=2**15, r=8, p=1): a memory-hard KDF, salted per password."""


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(128), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default=Role.MODERATOR)
    blur_media: Mapped[bool] = mapped_column(Boolean, default=True)
    """Wellbeing: media is shown blurred until the moderator reveals it."""
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]

    # Flask-Login's user protocol
    @property
    def is_active(self) -> bool:
        return bool(self.active)

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        # The hash tail rides along: changing the password ends every existing session.
        return f"{self.id}:{self.password_hash[-12:]}"

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    @property
    def actor(self) -> str:
        return f"moderator:{self.username}"

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password, method=PASSWORD_METHOD)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)
