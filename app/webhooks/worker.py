"""The webhook worker: a SimpleWorker on queue `webhooks` only (never the analysis queue), with
the scheduler on so that RQ's Retry intervals fire, and the outbox reconciler in its maintenance."""

from __future__ import annotations

import logging
import os

from rq import Queue, SimpleWorker

from app.webhooks.outbox import reconcile_if_due
from workers.lease import LeasedWorkerMixin

log = logging.getLogger(__name__)


class WebhookWorker(LeasedWorkerMixin, SimpleWorker):
    def __init__(self, queues=None, *args, context=None, **kwargs):
        from workers.context import get_context

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
    from workers.context import configure, work_with_reconnect

    ctx = configure(settings)
    return work_with_reconnect(lambda: WebhookWorker(context=ctx), burst=burst, with_scheduler=with_scheduler,
                               logging_level=os.environ.get("VERITY_LOG_LEVEL", "INFO"))
