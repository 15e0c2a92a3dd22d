"""Per-process handles a worker needs: settings, DB, storage, Redis, the lifecycle (with the
webhook outbox subscribed), and the detector.

Everything is built lazily and once per process. The detector in particular is created only in
the process that runs jobs, after any fork (onnxruntime thread pools and CUDA contexts do not
survive a fork; workers/worker.py says more).
"""

from __future__ import annotations

import logging
import threading
import time
from functools import cached_property

from redis.exceptions import ConnectionError as RedisConnectionError

from core.db import Database
from core.lifecycle import Lifecycle
from core.queue import redis_connection
from core.settings import Settings, load_settings
from core.storage import make_storage

_lock = threading.Lock()
_context: WorkerContext | None = None


class WorkerContext:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._detector = None

    @cached_property
    def db(self) -> Database:
        return Database(self.settings.database_url)

    @cached_property
    def storage(self):
        return make_storage(self.settings)

    @cached_property
    def redis(self):
        return redis_connection(self.settings)

    @cached_property
    def bank(self):
        """The known-fakes bank's index, rebuilt when the bank changes (core/bank.py)."""
        from core.bank import BankCache

        return BankCache()

    @cached_property
    def lifecycle(self) -> Lifecycle:
        """This process's lifecycle; the webhook outbox subscribes here, where the worker starts."""
        from core.webhooks.outbox import Outbox

        lifecycle = Lifecycle(self.settings, self.storage, self.redis)
        lifecycle.subscribe(Outbox(self.settings, self.db.engine, self.redis).on_status_change)
        return lifecycle

    @cached_property
    def live(self):
        """This process's live sessions (core/live.py), their webhooks subscribed."""
        from core.live import Live
        from core.webhooks.outbox import Outbox

        live = Live(self.lifecycle, self.redis)
        live.subscribe(Outbox(self.settings, self.db.engine, self.redis).on_live_event)
        return live

    @property
    def detector_loaded(self) -> bool:
        return self._detector is not None

    def detector(self):
        """The process's warmed-up detector, built on first use."""
        if self._detector is None:
            with _lock:
                if self._detector is None:
                    from detector.pipeline import Detector

                    s = self.settings
                    det = Detector(model=s.model, models_dir=s.models_dir, device=s.device,
                                   frames=s.frames, threads=s.ort_threads, spin=s.ort_spin)
                    det.warmup()
                    self._detector = det
        return self._detector

    def adopt_detector(self, detector) -> None:
        """Use an already built detector (tests share one warmed detector across contexts)."""
        self._detector = detector


def configure(settings: Settings, detector=None) -> WorkerContext:
    """Set this process's context explicitly (the worker CLI, tests)."""
    from core import defaults
    from core.storage import sweep_tmp

    global _context
    sweep_tmp(settings.tmp_dir, defaults.SPOOL_MAX_AGE_SECONDS)  # downloads of a killed worker
    with _lock:
        old = _context
        _context = WorkerContext(settings)
    if detector is not None:
        _context.adopt_detector(detector)
    elif old is not None and old._detector is not None and _same_model(old.settings, settings):
        _context.adopt_detector(old._detector)
    return _context


def _same_model(a: Settings, b: Settings) -> bool:
    return ((a.model, a.models_dir, a.device, a.frames, a.ort_spin, a.ort_threads)
            == (b.model, b.models_dir, b.device, b.frames, b.ort_spin, b.ort_threads))


def get_context() -> WorkerContext:
    global _context
    if _context is None:
        with _lock:
            if _context is None:
                _context = WorkerContext(load_settings())
    return _context


log = logging.getLogger(__name__)

REDIS_RECONNECT_SECONDS = (1, 2, 4, 8, 15, 30)
"""Back-off between a worker's attempts to get Redis back; the last value repeats."""


def work_with_reconnect(make_worker, *, burst: bool = False, **work_kwargs) -> bool:
    """Run `make_worker().work(...)`, building a new worker whenever Redis goes away.

    Used by the detector and the webhook workers: a lost Redis must not end the process (a
    supervisor that sees its children die again and again gives up, and a single worker has
    none). A burst run, which is meant to end, lets the error through.

    Redis can go away in two ways for RQ: an error out of `work()` (caught here), or an error
    in a step of its loop that RQ catches itself ("found an unhandled exception, quitting"),
    after which `work()` returns as if it were done. So a return is an end only when it was
    asked for: a burst run, `max_jobs`, or a stop signal; any other return starts a new worker."""
    attempt = 0
    while True:
        try:
            worker = make_worker()  # the constructor talks to Redis too
            worked = worker.work(burst=burst, **work_kwargs)
            if (burst or work_kwargs.get("max_jobs") is not None
                    or getattr(worker, "_shutdown_requested_date", None) is not None):
                return worked
            reason = "the worker loop ended with no stop requested"
        except RedisConnectionError as e:
            if burst:
                raise
            reason = f"lost Redis ({e})"
        delay = REDIS_RECONNECT_SECONDS[min(attempt, len(REDIS_RECONNECT_SECONDS) - 1)]
        log.warning("%s; starting a new worker in %ss", reason, delay)
        attempt += 1
        time.sleep(delay)
