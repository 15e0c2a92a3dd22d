"""Hook point for outbound notifications (platform webhooks, issue "platform API").

`notify(upload, event)` is called after every committed terminal status change, by the worker
and by the review flow. It does nothing yet beyond counting; the webhook issue registers a
sender with `register(...)` (e.g. one that writes an outbox row the webhook worker delivers).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Sender = Callable[[Any, str], None]
_senders: list[Sender] = []


def register(sender: Sender) -> None:
    if sender not in _senders:
        _senders.append(sender)


def unregister(sender: Sender) -> None:
    if sender in _senders:
        _senders.remove(sender)


def notify(upload: Any, event: str) -> None:
    """Tell interested parties that `upload` reached `event` (its new status). Never raises: a
    notification failure must not undo a committed verdict; the senders own their retries."""
    for sender in _senders:
        try:
            sender(upload, event)
        except Exception:
            log.exception("notification sender %r failed for upload %s (%s)", sender, upload.id, event)
