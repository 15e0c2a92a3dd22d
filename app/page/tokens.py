"""The two signed strings of the upload page, both made with the app's secret key (itsdangerous):

- a **page token**: minted by a platform for one of its signed-in users (POST /api/v1/page-tokens)
  and handed to the page (`/?token=...`), it lets that browser upload for the platform for
  PAGE_TOKEN_SECONDS; the upload counts as the platform's (its key's webhooks, its policy);
- a **status capability**: handed to the browser that uploaded, in the status link; only that
  link reads the upload's status (an upload id alone is not enough, and an API upload is never
  shown there).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from itsdangerous import BadSignature, Signer, URLSafeTimedSerializer

from core import defaults

TOKEN_SALT = "verity.page-token"
STATUS_SALT = "verity.page-status"


@dataclass(frozen=True)
class PageToken:
    client_id: str
    subject: str | None
    """The platform's own id for its user, if it gave one (kept in the upload's metadata)."""


def mint_page_token(secret_key: str, client_id: str, subject: str | None = None,
                    seconds: int = defaults.PAGE_TOKEN_SECONDS) -> tuple[str, float]:
    """(token, expires_at unix time)."""
    token = URLSafeTimedSerializer(secret_key, salt=TOKEN_SALT).dumps({"c": client_id, "s": subject})
    return token, time.time() + seconds


def read_page_token(secret_key: str, token: str, seconds: int = defaults.PAGE_TOKEN_SECONDS) -> PageToken | None:
    """The token's client and subject, or None when it is forged, malformed or expired."""
    if not token or len(token) > 1024:
        return None
    try:
        data = URLSafeTimedSerializer(secret_key, salt=TOKEN_SALT).loads(token, max_age=seconds)
    except BadSignature:  # SignatureExpired is one
        return None
    if not isinstance(data, dict) or not isinstance(data.get("c"), str):
        return None
    return PageToken(client_id=data["c"], subject=data.get("s") if isinstance(data.get("s"), str) else None)


def status_capability(secret_key: str, upload_id: str) -> str:
    return Signer(secret_key, salt=STATUS_SALT).get_signature(upload_id).decode()


def check_status_capability(secret_key: str, upload_id: str, capability: str | None) -> bool:
    return bool(capability) and Signer(secret_key, salt=STATUS_SALT).verify_signature(
        upload_id.encode(), (capability or "").encode())
