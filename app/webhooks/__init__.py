"""Signed webhooks to client platforms (issue 5): outbox rows written after each terminal status
change, delivered by RQ jobs on their own queue (`webhooks`) by their own worker, never inline in
an analysis worker, so a slow or dead endpoint cannot hold analysis up.

The sender is registered with app.notify when this package is imported, which happens wherever
app.models is (app/models.py imports app.webhooks.models): the web processes (review decisions)
and the detector workers (verdicts) both write outbox rows without further wiring.
"""

from __future__ import annotations

from typing import Any

from app import notify


def _send(upload: Any, status: str) -> None:
    from app.webhooks.outbox import on_status_change

    on_status_change(upload, status)


notify.register(_send)
