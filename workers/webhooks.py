"""Webhook delivery: the job on queue `webhooks` and its worker, a SimpleWorker on that queue only
(never the analysis queue), with the scheduler on so that RQ's Retry intervals fire, and the
outbox reconciler in its maintenance."""

from __future__ import annotations

import logging

from core.webhooks.delivery import deliver_with
from core.webhooks.outbox import reconcile_if_due
from workers.context import configure, get_context, work_with_reconnect
from workers.lease import ContextWorker

log = logging.getLogger(__name__)


def deliver(delivery_id: str) -> dict:
    """The RQ job (core.webhooks.outbox.JOB_FUNC): one attempt at one delivery."""
    ctx = get_context()
    return deliver_with(ctx.settings, ctx.db.engine, delivery_id)


class WebhookWorker(ContextWorker):
    @staticmethod
    def queue_name(settings) -> str:
        return settings.webhook_queue

    def run_maintenance_tasks(self):
        super().run_maintenance_tasks()
        try:
            reconcile_if_due(self.ctx.settings, self.ctx.db.engine, self.connection)
        except Exception:
            log.exception("webhook reconciler failed; it runs again at the next maintenance")


def run_webhook_worker(settings, *, burst: bool = False, with_scheduler: bool = True) -> bool:
    from workers.worker import configure_logging

    configure_logging(settings.log_level)
    ctx = configure(settings)
    return work_with_reconnect(lambda: WebhookWorker(context=ctx), burst=burst, with_scheduler=with_scheduler,
                               logging_level=settings.log_level)
