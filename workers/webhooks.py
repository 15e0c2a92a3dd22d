"""Webhook delivery: the job on queue `webhooks` and its worker, a SimpleWorker on that queue only
(never the analysis queue), with the scheduler on so that RQ's Retry intervals fire, and the
outbox reconciler in its maintenance."""

from __future__ import annotations

import logging

from rq import Queue, SimpleWorker

from core.webhooks.delivery import deliver_with
from core.webhooks.outbox import reconcile_if_due
from workers.context import WorkerContext, configure, get_context, work_with_reconnect
from workers.lease import LeasedWorkerMixin

log = logging.getLogger(__name__)


def deliver(delivery_id: str) -> dict:
    """The RQ job (core.webhooks.outbox.JOB_FUNC): one attempt at one delivery."""
    ctx = get_context()
    return deliver_with(ctx.settings, ctx.db.engine, delivery_id)


class WebhookWorker(LeasedWorkerMixin, SimpleWorker):
    def __init__(self, queues=None, *args, context: WorkerContext | None = None, **kwargs):
        self.ctx = context or get_context()
        s = self.ctx.settings
        if queues is None:
            queues = [Queue(s.webhook_queue, connection=self.ctx.redis, serializer="json")]
        kwargs.setdefault("connection", self.ctx.redis)
        kwargs.setdefault("serializer", "json")
        kwargs.setdefault("maintenance_interval", s.maintenance_interval)
        kwargs.setdefault("worker_ttl", s.maintenance_interval + 15)
        super().__init__(queues, *args, **kwargs)

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
