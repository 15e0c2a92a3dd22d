"""A short liveness lease per worker, so that a SIGKILLed worker's job is retried within about
LEASE_TTL_SECONDS + SWEEP_SECONDS instead of after the job timeout + 60 s.

Why it is needed: a SimpleWorker runs its job in its own main thread, so RQ cannot heartbeat during
the job; RQ therefore registers each execution for the job timeout + 60 s, and only after that
does `StartedJobRegistry.cleanup` treat a dead worker's job as abandoned (tests/test_worker_lease.py
measures it). With the production job timeout (600 s), an upload held by a killed worker waited 11 minutes.

How: each leased worker keeps `verity:lease:<name>` alive (TTL `LEASE_TTL_SECONDS`) from a
daemon thread that does nothing else (onnxruntime, Pillow and PyAV release the GIL, so it runs
during a job), and marks itself `verity:leased:<name>` for much longer. At each sweep, an
execution in the started registry whose worker is marked leased but whose lease is gone belongs to
a dead worker: its score is set to "expired", and RQ's own cleanup, run at once under RQ's
registry-cleaning lock, retries it (Retry) or fails it (failure callback -> review), exactly as
for a job that timed out. Workers that never
took a lease (a plain `rq worker`) are left to RQ's timeout.

A job between the queue and the started registry is never in nobody's hands. RQ takes a job from
several queues with BLPOP, which removes it from Redis before the worker has recorded it anywhere:
a worker stopped (Ctrl-C raises StopRequested inside the blocking read) or killed in that moment
lost the job for good, its status still "queued" in no queue, so that not even the reconciler
took it up again (tests/test_worker_lease.py reproduces it). So a leased worker takes each job
with LMOVE/BLMOVE into its own list, `verity:holding:<name>` (`HoldingQueue`), and the transaction
that puts the job in the started registry also takes it out of that list. A worker that stops
puts what it holds back at the head of its queue; a dead worker's list is put back by the next
sweep of any live worker. Sweeps run every `SWEEP_SECONDS`, between jobs and while idle, not only
at RQ's maintenance interval, so a dead worker's job is taken up again within about
LEASE_TTL_SECONDS + SWEEP_SECONDS of its death.

BLMOVE blocks on one list, and a detector worker takes from two queues (live segments first, then
uploads). An idle worker on several queues therefore blocks on their wake lists (BLPOP reads
several; `core.queue.WakingQueue` pushes a token with every job) and, woken, takes the job with
LMOVE, the most urgent queue first; a job put back from a worker's own list wakes one too, and a
job pushed without a token (RQ's own pushes: its scheduler's, a registry's requeue) is found at
the next `POLL_SECONDS`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.exceptions import DequeueTimeout, NoSuchJobError
from rq.job import Job
from rq.utils import as_text, backend_class

from core.queue import LEASED_WORKERS_KEY, WAKE_MAX, WakingQueue, holding_key, wake_key

log = logging.getLogger(__name__)

LEASE_TTL_SECONDS = 15
"""A worker whose lease is older than this is dead (the thread renews it every third of it)."""
LEASED_MARK_SECONDS = 24 * 3600
"""How long the "this worker holds leases" mark outlives its last renewal."""
SWEEP_SECONDS = LEASE_TTL_SECONDS / 3
"""How often each worker looks for dead workers' jobs (and how long an idle worker blocks at most)."""
CLEANING_LOCK_SECONDS = 60
"""How long a queue's registry-cleaning lock lives when its holder never releases it (killed while
cleaning). RQ's own lasts 899 s, and the hand-back of dead workers' jobs waits for it too: one
worker SIGKILLed in a cleanup would hold every dead worker's job for 15 minutes. A cleanup of
Verity's registries takes milliseconds."""
POLL_SECONDS = 0.5
"""A worker on several queues blocks on their wake lists (core.queue.wake_key) this long at a time,
then looks at every queue: a job pushed without a wake token (a plain RQ queue's push) waits at
most this long for an idle worker."""

_PUT_BACK = """
if redis.call('lrem', KEYS[1], 1, ARGV[1]) == 1 then
    redis.call('lpush', KEYS[2], ARGV[1])
    redis.call('rpush', KEYS[3], 1)
    redis.call('ltrim', KEYS[3], -tonumber(ARGV[2]), -1)
    return 1
end
return 0
"""
"""Move a job id from a worker's own list back to the head of its queue, once, and wake an idle
worker for it (core.queue.WakingQueue's token), as one script."""


def lease_key(worker_name: str) -> str:
    return f"verity:lease:{worker_name}"


def leased_mark_key(worker_name: str) -> str:
    return f"verity:leased:{worker_name}"


def put_back_held_jobs(connection: Redis, worker_name: str) -> list[str]:
    """Put the jobs in `worker_name`'s own list back at the head of their queues (each at most
    once, however many workers do it at the same time); returns their ids."""
    key = holding_key(worker_name)
    put_back = []
    for raw in connection.lrange(key, 0, -1):
        job_id = as_text(raw)
        origin = connection.hget(Job.key_for(job_id), "origin")
        if origin is None:  # the job is gone (expired, deleted): nothing to hand back
            connection.lrem(key, 1, job_id)
            continue
        queue_key = Queue.redis_queue_namespace_prefix + as_text(origin)
        if connection.eval(_PUT_BACK, 3, key, queue_key, wake_key(as_text(origin)), job_id, WAKE_MAX):
            put_back.append(job_id)
    return put_back


def put_back_dead_workers_jobs(connection: Redis) -> list[str]:
    """Put back what every dead leased worker held between its queue and its started registry;
    returns the job ids."""
    put_back: list[str] = []
    for raw in connection.smembers(LEASED_WORKERS_KEY):
        worker = as_text(raw)
        if connection.exists(lease_key(worker)):
            continue
        jobs = put_back_held_jobs(connection, worker)
        if jobs:
            log.warning("worker %s is dead (lease expired); the job(s) it was taking, %s, are queued again",
                        worker, ", ".join(jobs))
        put_back += jobs
        connection.srem(LEASED_WORKERS_KEY, worker)
    return put_back


class HoldingQueue(WakingQueue):
    """A Queue whose `dequeue_any` moves the job into the worker's own list (`holding`, set by
    `for_worker`) in the same Redis command that takes it from the queue, for one queue or
    several (RQ moves it into a shared list for one queue and holds it nowhere for several)."""

    holding: str = ""

    def acquire_maintenance_lock(self) -> bool:
        """RQ's registry-cleaning lock, living CLEANING_LOCK_SECONDS instead of RQ's 899."""
        return bool(self.connection.set(self.registry_cleaning_key, 1, nx=True, ex=CLEANING_LOCK_SECONDS))

    @classmethod
    def for_worker(cls, worker_name: str) -> type[HoldingQueue]:
        return type(cls.__name__, (cls,), {"holding": holding_key(worker_name)})

    @classmethod
    def dequeue_any(cls, queues, timeout, connection=None, job_class=None, serializer=None,
                    death_penalty_class=None):
        job_cls = backend_class(cls, "job_class", override=job_class)
        queues = list(queues)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job_id, queue = cls._take(queues, deadline, connection)
            if job_id is None:
                if deadline is None:
                    return None
                raise DequeueTimeout(timeout, [q.key for q in queues])
            try:
                job = job_cls.fetch(job_id, connection=connection, serializer=serializer)
            except NoSuchJobError:
                connection.lrem(cls.holding, 1, job_id)  # RQ, too, passes over a job that is gone
                continue
            # Anything else (a stop that lands here, Redis gone) leaves the job in this worker's
            # list: put back when the worker stops, or by a sweep when it died.
            return job, cls.from_queue_key(queue.key, connection=connection, job_class=job_cls,
                                           serializer=serializer, death_penalty_class=death_penalty_class)

    @classmethod
    def _take(cls, queues, deadline: float | None, connection: Redis):
        """(job id, queue), the first queue first; (None, None) when none came by the deadline
        (at once when `deadline` is None)."""
        while True:
            for queue in queues:
                raw = connection.lmove(queue.key, cls.holding)
                if raw is not None:
                    return as_text(raw), queue
            if deadline is None:
                return None, None
            left = deadline - time.monotonic()
            if left <= 0:
                return None, None
            if len(queues) == 1:
                raw = connection.blmove(queues[0].key, cls.holding, max(left, 0.01))
                if raw is not None:
                    return as_text(raw), queues[0]
            else:  # woken by any queue's push (or after POLL_SECONDS), then LMOVE in order, above
                connection.blpop([wake_key(q.name) for q in queues], max(min(left, POLL_SECONDS), 0.01))


def hand_back_dead_executions(connection: Redis, queues, exception_handlers=None) -> list[str]:
    """Expire dead leased workers' executions and have RQ's `StartedJobRegistry.cleanup` retry
    them (or fail them: callback -> review) at once, queue by queue, under RQ's registry-cleaning
    lock; returns their job ids. The lock matters: a cleanup ends by removing every expired entry,
    read or not, so an entry expired while another worker cleaned was dropped unretried, its job
    `started` for ever (a chaos run caught it). A queue whose lock is taken waits for the next sweep."""
    handed: list[str] = []
    for queue in queues:
        if not queue.acquire_maintenance_lock():
            continue
        try:
            dead = expire_dead_executions(connection, [queue])
            if dead:
                queue.started_job_registry.cleanup(exception_handlers=exception_handlers)
            handed += dead
        finally:
            queue.release_maintenance_lock()
    return handed


def expire_dead_executions(connection: Redis, queues) -> list[str]:
    """Mark the executions of dead leased workers as expired in each queue's started registry;
    returns their job ids. RQ's `StartedJobRegistry.cleanup` then handles them as abandoned; the
    caller holds the queue's registry-cleaning lock (`hand_back_dead_executions`)."""
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
    """For RQ worker classes (before the RQ class in the bases) whose queues are of
    `HoldingQueue.for_worker(name)` (ContextWorker builds them so)."""

    _lease_stop: threading.Event | None = None
    _swept_at: float = float("-inf")

    def _renew_lease(self) -> None:
        with self.connection.pipeline() as p:
            p.set(lease_key(self.name), os.getpid(), ex=LEASE_TTL_SECONDS)
            p.set(leased_mark_key(self.name), 1, ex=LEASED_MARK_SECONDS)
            p.sadd(LEASED_WORKERS_KEY, self.name)  # again after a sweep took a lapsed lease for a death
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
            held = put_back_held_jobs(self.connection, self.name)  # a stop that came as it took a job
            if held:
                log.info("stopping: job(s) %s queued again", ", ".join(held))
            self.connection.delete(lease_key(self.name), leased_mark_key(self.name))
            self.connection.srem(LEASED_WORKERS_KEY, self.name)
        except RedisError:
            pass  # the lease lapses by itself, and a live worker puts back what this one held
        super().register_death(*args, **kwargs)

    def set_current_job_id(self, job_id=None, pipeline=None):
        """RQ calls this in the transaction that puts the job in the started registry: the job
        leaves this worker's own list in that same transaction."""
        super().set_current_job_id(job_id, pipeline=pipeline)
        if job_id is not None:
            (pipeline if pipeline is not None else self.connection).lrem(holding_key(self.name), 1, job_id)

    @property
    def dequeue_timeout(self) -> int:
        """An idle worker comes round (heartbeat, sweep) at least every SWEEP_SECONDS."""
        return max(1, min(super().dequeue_timeout, int(SWEEP_SECONDS)))

    @property
    def should_run_maintenance_tasks(self) -> bool:
        """RQ's schedule; in between, RQ's loop asks this often enough for a sweep every SWEEP_SECONDS."""
        if super().should_run_maintenance_tasks:
            return True
        if time.monotonic() - self._swept_at >= SWEEP_SECONDS:
            self._sweep()
        return False

    def _sweep(self) -> list[str]:
        """Put back dead workers' held jobs, and hand back their started ones (returned)."""
        self._swept_at = time.monotonic()
        try:
            put_back_dead_workers_jobs(self.connection)
            return hand_back_dead_executions(self.connection, self.queues, self._exc_handlers)
        except RedisError:
            log.exception("could not look for dead workers' jobs; RQ's timeout still recovers them")
            return []

    def work(self, *args, **kwargs):
        try:
            return super().work(*args, **kwargs)
        finally:
            self._end_lease()  # also when work() ends by an exception (Redis lost: a new worker follows)

    def run_maintenance_tasks(self):
        self._sweep()
        super().run_maintenance_tasks()


class ContextWorker(LeasedWorkerMixin, SimpleWorker):
    """A SimpleWorker of this project: it takes its Redis, its settings and its queue from the
    process's WorkerContext, holds a liveness lease, speaks JSON, and wakes up (heartbeat,
    maintenance, reconcilers) at least once per maintenance interval. Subclasses name the queue."""

    def __init__(self, queues=None, *args, context=None, **kwargs):
        from workers.context import get_context

        self.ctx = context or get_context()
        s = self.ctx.settings
        kwargs["name"] = kwargs.get("name") or uuid.uuid4().hex  # RQ's default name, known before RQ's init
        queue_class = HoldingQueue.for_worker(kwargs["name"])
        names = self.queues_to_take(s) if queues is None else [getattr(q, "name", q) for q in queues]
        queues = [queue_class(name, connection=self.ctx.redis, serializer="json") for name in names]
        kwargs["queue_class"] = queue_class
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
