"""A short liveness lease per worker, so that a SIGKILLed worker's job is retried within about a
maintenance interval instead of after the job timeout + 60 s.

Why it is needed: a SimpleWorker runs its job in its own main thread, so RQ cannot heartbeat during
the job; RQ therefore registers each execution for the job timeout + 60 s, and only after that
does `StartedJobRegistry.cleanup` treat a dead worker's job as abandoned (tests/test_worker_lease.py
measures it). With the production job timeout (600 s), an upload held by a killed worker waited 11 minutes.

How: each leased worker keeps `verity:lease:<name>` alive (TTL `LEASE_TTL_SECONDS`) from a
daemon thread that does nothing else (onnxruntime, Pillow and PyAV release the GIL, so it runs
during a job), and marks itself `verity:leased:<name>` for much longer. At maintenance, an
execution in the started registry whose worker is marked leased but whose lease is gone belongs to
a dead worker: its score is set to "expired", and RQ's own cleanup then retries it (Retry) or
fails it (failure callback -> review), exactly as for a job that timed out. Workers that never
took a lease (a plain `rq worker`) are left to RQ's timeout.
"""

from __future__ import annotations

import logging
import os
import threading

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.utils import as_text

log = logging.getLogger(__name__)

LEASE_TTL_SECONDS = 15
"""A worker whose lease is older than this is dead (the thread renews it every third of it)."""
LEASED_MARK_SECONDS = 24 * 3600
"""How long the "this worker holds leases" mark outlives its last renewal."""


def lease_key(worker_name: str) -> str:
    return f"verity:lease:{worker_name}"


def leased_mark_key(worker_name: str) -> str:
    return f"verity:leased:{worker_name}"


def expire_dead_executions(connection: Redis, queues) -> list[str]:
    """Mark the executions of dead leased workers as expired in each queue's started registry;
    returns their job ids. RQ's `StartedJobRegistry.cleanup` (run next by the maintenance) then
    handles them as abandoned."""
    dead: list[str] = []
    for queue in queues:
        registry = queue.started_job_registry
        for entry in connection.zrange(registry.key, 0, -1):
            composite = as_text(entry)
            if ":" not in composite:
                continue
            worker = connection.hget(f"rq:execution:{composite}", "worker_name")
            if not worker:
                continue
            worker = as_text(worker)
            if connection.exists(lease_key(worker)) or not connection.exists(leased_mark_key(worker)):
                continue
            connection.zadd(registry.key, {composite: 1}, xx=True)  # expired since 1970
            job_id = composite.split(":", 1)[0]
            dead.append(job_id)
            log.warning("worker %s is dead (lease expired); its job %s is handed back now", worker, job_id)
    return dead


class LeasedWorkerMixin:
    """For RQ worker classes (before the RQ class in the bases)."""

    _lease_stop: threading.Event | None = None

    def _renew_lease(self) -> None:
        with self.connection.pipeline() as p:
            p.set(lease_key(self.name), os.getpid(), ex=LEASE_TTL_SECONDS)
            p.set(leased_mark_key(self.name), 1, ex=LEASED_MARK_SECONDS)
            p.execute()

    def _lease_loop(self, stop: threading.Event) -> None:
        while not stop.wait(LEASE_TTL_SECONDS / 3):
            try:
                self._renew_lease()
            except RedisError as e:  # Redis away: the lease lapses, which is the truth
                log.debug("lease renewal failed: %s", e)

    def register_birth(self, *args, **kwargs):
        super().register_birth(*args, **kwargs)
        self._renew_lease()
        self._lease_stop = threading.Event()
        threading.Thread(target=self._lease_loop, args=(self._lease_stop,), name=f"lease-{self.name}",
                         daemon=True).start()

    def _end_lease(self) -> None:
        if self._lease_stop is not None:
            self._lease_stop.set()
            self._lease_stop = None

    def register_death(self, *args, **kwargs):
        self._end_lease()
        try:
            self.connection.delete(lease_key(self.name), leased_mark_key(self.name))
        except RedisError:
            pass  # the lease lapses by itself
        super().register_death(*args, **kwargs)

    def work(self, *args, **kwargs):
        try:
            return super().work(*args, **kwargs)
        finally:
            self._end_lease()  # also when work() ends by an exception (Redis lost: a new worker follows)

    def run_maintenance_tasks(self):
        try:
            expire_dead_executions(self.connection, self.queues)
        except RedisError:
            log.exception("could not look for dead workers' jobs; RQ's timeout still recovers them")
        super().run_maintenance_tasks()


class ContextWorker(LeasedWorkerMixin, SimpleWorker):
    """A SimpleWorker of this project: it takes its Redis, its settings and its queue from the
    process's WorkerContext, holds a liveness lease, speaks JSON, and wakes up (heartbeat,
    maintenance, reconcilers) at least once per maintenance interval. Subclasses name the queue."""

    def __init__(self, queues=None, *args, context=None, **kwargs):
        from workers.context import get_context

        self.ctx = context or get_context()
        s = self.ctx.settings
        if queues is None:
            queues = [Queue(name, connection=self.ctx.redis, serializer="json") for name in self.queues_to_take(s)]
        kwargs.setdefault("connection", self.ctx.redis)
        kwargs.setdefault("serializer", "json")
        kwargs.setdefault("maintenance_interval", s.maintenance_interval)
        kwargs.setdefault("worker_ttl", s.maintenance_interval + 15)
        super().__init__(queues, *args, **kwargs)

    @staticmethod
    def queue_name(settings) -> str:
        raise NotImplementedError

    @classmethod
    def queues_to_take(cls, settings) -> list[str]:
        """The queues this worker takes, first first (RQ's order)."""
        return [cls.queue_name(settings)]
