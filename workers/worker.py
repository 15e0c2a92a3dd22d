"""DetectorWorker: an RQ SimpleWorker that owns one warmed detector per process.

Why SimpleWorker: the forking Worker runs each job in a fresh fork of
the parent, and an onnxruntime session (thread pools, CUDA context) must not cross a fork; so
either every job rebuilds the sessions (seconds per job) or the parent builds them before forking
(unsafe). SimpleWorker runs jobs in the process that built the detector. What we give up, and how
it is covered: no per-job horse isolation (media decode is capped by the detector; a crash kills
the worker process, `verity worker` restarts it, and RQ's maintenance + Retry re-runs the job) and
no RQ heartbeat during a job (workers/lease.py keeps a liveness lease from a thread instead, so a
dead worker's job is handed back within about 20 s of its death).

The detector is built in `__init__`, i.e. in the process that will use it: `verity worker -n N`
starts N separate processes, and `rq worker-pool -w workers.worker.DetectorWorker` forks before it
constructs the worker class, so both are fork-safe.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time

from core.queue import worker_info_key
from workers.context import WorkerContext, configure, work_with_reconnect
from workers.lease import ContextWorker
from workers.live import reconcile_live_if_due
from workers.reconcile import reconcile_if_due

log = logging.getLogger(__name__)


class JobIdFilter(logging.Filter):
    """Stamps the current job id on every log record (cf. Redash CurrentJobFilter)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from rq import get_current_job

        job = get_current_job()
        record.job_id = job.id if job is not None else "-"
        return True


class DetectorWorker(ContextWorker):
    def __init__(self, queues=None, *args, context: WorkerContext | None = None, **kwargs):
        self._info_at, self._info_ttl = float("-inf"), 0
        super().__init__(queues, *args, context=context, **kwargs)
        self.detector = self.ctx.detector()  # built and warmed here: after any fork, once per process
        log.info("detector %s %s on %s; data licence: %s", self.detector.model_name, self.detector.model_version,
                 self.detector.provider, self.detector.manifest.licence_text)

    @staticmethod
    def queue_name(settings) -> str:
        return settings.queue_name

    @classmethod
    def queues_to_take(cls, settings) -> list[str]:
        """Live segments before uploads: a call is waiting for the answer (core/live.py)."""
        return [settings.live_queue, settings.queue_name]

    def info(self) -> dict:
        return {"provider": self.detector.provider, "face_provider": self.detector.face_provider,
                "model": self.detector.model_name, "version": self.detector.model_version,
                "data_licence": self.detector.manifest.licence_text,
                "threads": self.detector.threads,
                "pid": os.getpid(), "host": socket.gethostname()}

    def heartbeat(self, timeout=None, pipeline=None):
        super().heartbeat(timeout, pipeline)
        # The provider record lives `ttl`; rq heartbeats several times per job, so the record is
        # rewritten only when a third of its life has gone or a job needs a longer one.
        ttl = int(timeout or self.worker_ttl + 60)
        now = time.monotonic()
        if now - self._info_at < self._info_ttl / 3 and ttl <= self._info_ttl:
            return
        (pipeline or self.connection).set(worker_info_key(self.name), json.dumps(self.info()), ex=ttl)
        self._info_at, self._info_ttl = now, ttl

    def register_death(self):
        self.connection.delete(worker_info_key(self.name))
        super().register_death()

    def run_maintenance_tasks(self):
        super().run_maintenance_tasks()
        try:
            reconcile_if_due(self.ctx.settings, self.ctx.db, self.ctx.lifecycle, self.connection)
        except Exception:
            log.exception("reconciler failed; it runs again at the next maintenance")
        try:
            reconcile_live_if_due(self.ctx, self.connection)
        except Exception:
            log.exception("live reconciler failed; it runs again at the next maintenance")


def configure_logging(level: str) -> None:
    """Our loggers print the job id of the record (RQ configures its own `rq.worker` logger)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [job %(job_id)s] %(name)s: %(message)s",
                                           "%H:%M:%S"))
    handler.addFilter(JobIdFilter())
    for name in ("app", "workers"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        # propagate stays on: a worker process has no root handler, and pytest's caplog needs it


def run_worker(settings, *, burst: bool = False, with_scheduler: bool = True, name: str | None = None,
               max_jobs: int | None = None) -> bool:
    level = settings.log_level
    configure_logging(level)
    ctx = configure(settings)
    first = [True]

    def make_worker():
        worker_name = name if first[0] else None  # a reconnected worker takes a fresh name
        first[0] = False
        return DetectorWorker(context=ctx, name=worker_name)  # talks to Redis too

    # A lost Redis must not end the process: a supervisor that sees workers die again and again
    # stops the pool, and `verity worker -n 1` has none (tests/chaos). The detector stays loaded
    # in ctx, and the job the worker held is recovered by rq/Retry.
    return work_with_reconnect(make_worker, burst=burst, with_scheduler=with_scheduler,
                               max_jobs=max_jobs, logging_level=level)

