"""API keys of client platforms: create (shown once), authenticate, revoke (issue 5).

A key is `vk_` + 43 url-safe characters (256 random bits). Only its sha256 is stored: with that
much entropy a fast hash is enough (no dictionary to attack), and it lets the lookup use a unique
index; the final comparison is `hmac.compare_digest`, and the key is never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from core import defaults
from core.lifecycle import audit
from core.models import ApiClient, utcnow


class ClientError(ValueError):
    """A key setting is invalid, or the client does not exist; the message says which."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> str:
    return defaults.API_KEY_PREFIX + secrets.token_urlsafe(defaults.API_KEY_BYTES)


def generate_webhook_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def check_rate_limit(value: str) -> str:
    from limits import parse_many

    try:
        if not parse_many(value):
            raise ValueError
    except ValueError:
        raise ClientError(f"rate limit {value!r} is not valid (examples: '100/minute', '10/second;1000/hour')") from None
    return value


WEBHOOK_URL_MAX = 2048
"""Length of ApiClient.webhook_url."""


def check_webhook_url(url: str, *, allow_private: bool = True) -> str:
    """An absolute http(s) URL that the outbound guard would send to. `allow_private` is the
    operator's VERITY_WEBHOOK_ALLOW_PRIVATE: callers that have the settings pass it, so that a
    private or loopback target is refused when it is configured, not first at delivery time
    (the guard checks every attempt again either way)."""
    from core.webhooks.guard import OutboundRefused, check_destination

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientError(f"webhook URL {url!r} must be an absolute http(s) URL")
    if len(url) > WEBHOOK_URL_MAX:
        raise ClientError(f"a webhook URL is at most {WEBHOOK_URL_MAX} characters")
    try:
        check_destination(url, allow_private=allow_private)
    except OutboundRefused as e:
        raise ClientError(f"webhook URL {url!r} is refused: {e}") from None
    return url


def check_thresholds(review: float | None, block: float | None) -> None:
    for name, v in (("review threshold", review), ("block threshold", block)):
        if v is not None and not 0.0 <= v <= 1.0:
            raise ClientError(f"{name} must be within [0, 1], got {v}")
    if review is not None and block is not None and block < review:
        raise ClientError("block threshold must be >= review threshold")


@dataclass(frozen=True)
class NewKey:
    client: ApiClient
    key: str
    """The key in clear: shown once, never stored."""


def create_client(session: Session, name: str, *, webhook_url: str | None = None,
                  rate_limit: str | None = None, show_score: bool = False,
                  review_threshold: float | None = None, block_threshold: float | None = None,
                  allow_private_webhook: bool = True) -> NewKey:
    name = name.strip()
    if not name or len(name) > 128:
        raise ClientError("a client name is 1 to 128 characters")
    if session.scalar(select(ApiClient.id).where(ApiClient.name == name)) is not None:
        raise ClientError(f"a client named {name!r} exists already (revoke it, or pick another name)")
    if webhook_url:
        check_webhook_url(webhook_url, allow_private=allow_private_webhook)
    if rate_limit:
        check_rate_limit(rate_limit)
    check_thresholds(review_threshold, block_threshold)
    key = generate_key()
    client = ApiClient(name=name, key_hash=hash_key(key), key_prefix=key[:10],
                       webhook_url=webhook_url or None,
                       webhook_secret=generate_webhook_secret(), show_score=show_score,
                       rate_limit=rate_limit or None, review_threshold=review_threshold,
                       block_threshold=block_threshold)
    session.add(client)
    session.commit()
    return NewKey(client, key)


def find_client(session: Session, name_or_id: str) -> ApiClient:
    c = session.scalar(select(ApiClient).where(or_(ApiClient.id == name_or_id, ApiClient.name == name_or_id)))
    if c is None:
        raise ClientError(f"no client {name_or_id!r}")
    return c


def revoke_client(session: Session, name_or_id: str) -> ApiClient:
    c = find_client(session, name_or_id)
    if c.revoked_at is None:
        c.revoked_at = utcnow()
        session.commit()
    return c


def update_client(session: Session, client: ApiClient, *, webhook_url: str | None, rate_limit: str | None,
                  show_score: bool, review_threshold: float | None, block_threshold: float | None,
                  allow_private_webhook: bool = True) -> dict[str, tuple[Any, Any]]:
    """Change an active client's settings (the key stays the same) under the rules of
    create_client; None (or blank) means the operator's default. Returns {field: (before, after)}
    for what changed. A revoked client is read-only."""
    if client.revoked_at is not None:
        raise ClientError(f"client {client.name!r} is revoked; its settings are read-only")
    webhook_url = (webhook_url or "").strip() or None
    rate_limit = (rate_limit or "").strip() or None
    if webhook_url:
        check_webhook_url(webhook_url, allow_private=allow_private_webhook)
    if rate_limit:
        check_rate_limit(rate_limit)
    check_thresholds(review_threshold, block_threshold)
    values = {"webhook_url": webhook_url, "rate_limit": rate_limit, "show_score": bool(show_score),
              "review_threshold": review_threshold, "block_threshold": block_threshold}
    changed = {k: (getattr(client, k), v) for k, v in values.items() if getattr(client, k) != v}
    for k, (_, v) in changed.items():
        setattr(client, k, v)
    session.commit()
    return changed


def audit_key_event(session: Session, client: ApiClient, action: str, actor: str, detail: dict[str, Any],
                    *, upload_id: str | None = None, request_id: str | None = None) -> None:
    """One audit event about a key, from the admin pages or the CLI (`actor` says which):
    the client's id, name and key prefix, never the key or the webhook secret."""
    audit(session, action, actor, upload_id=upload_id, request_id=request_id,
          detail={"client_id": client.id, "name": client.name, "key_prefix": client.key_prefix, **detail})
    session.commit()


def changes_detail(changed: dict[str, tuple[Any, Any]]) -> dict[str, dict[str, Any]]:
    """update_client's {field: (before, after)} as an audit detail."""
    return {k: {"before": a, "after": b} for k, (a, b) in changed.items()}


def creation_detail(client: ApiClient) -> dict[str, Any]:
    return {"webhook_url": client.webhook_url, "rate_limit": client.rate_limit, "show_score": client.show_score}


def authenticate(session: Session, key: str) -> ApiClient | None:
    """The active client owning `key`, or None (unknown or revoked)."""
    if not key or len(key) > 256:
        return None
    digest = hash_key(key)
    c = session.scalar(select(ApiClient).where(ApiClient.key_hash == digest))
    if c is None or not hmac.compare_digest(c.key_hash, digest) or c.revoked_at is not None:
        return None
    return c


def list_clients(session: Session) -> list[ApiClient]:
    return list(session.scalars(select(ApiClient).order_by(ApiClient.created_at)))
