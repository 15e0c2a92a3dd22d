"""Moderator accounts: a username, a slow password hash and a role."""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime

from sqlalchemy import Boolean, Integer, String
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

_DUMMY_HASH: list[str] = []

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
    session_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Part of every session's id: raising it (sign-out) ends every session of the account."""
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
        # The session generation and the hash tail ride along: signing out (which raises the
        # generation) or changing the password ends every existing session of the account,
        # including a copy of the cookie taken before.
        return f"{self.id}:{self.session_generation or 0}:{self.password_hash[-12:]}"

    def matches_session(self, session_id: str) -> bool:
        """Whether a session id (Flask-Login's user id) is still one of this account's."""
        return self.is_active and hmac.compare_digest(session_id, self.get_id())

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


def check_password_of(user: User | None, password: str) -> bool:
    """The password check of a sign-in, as slow for an unknown name as for a known one (a dummy
    scrypt hash is checked instead), so that the answer's timing does not tell which names exist."""
    if user is None:
        if not _DUMMY_HASH:
            _DUMMY_HASH.append(generate_password_hash(secrets.token_hex(16), method=PASSWORD_METHOD))
        check_password_hash(_DUMMY_HASH[0], password)
        return False
    return user.check_password(password)
