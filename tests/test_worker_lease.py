"""A SIGKILLed worker's job is handed back within seconds of its lease lapsing, not after the job
timeout + 60 s that RQ alone needs for a SimpleWorker; and a job a worker had taken from its
queue but not yet started is never lost, however the worker stops (workers/lease.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from mediagen import REPO
from rq import Queue, Retry, SimpleWorker
from rq.exceptions import StopRequested
from rq.job import Job, JobStatus
from rq.registry import clean_registries
from waits import wait_for

from workers.context import configure
from workers.lease import (
    CLEANING_LOCK_SECONDS,
    LEASE_TTL_SECONDS,
    LEASED_WORKERS_KEY,
    SWEEP_SECONDS,
    ContextWorker,
    HoldingQueue,
    expire_dead_executions,
    hand_back_dead_executions,
    holding_key,
    lease_key,
    leased_mark_key,
)

FIRST, SECOND = "verity-test-urgent", "verity-test-later"


class TwoQueues(ContextWorker):
    """A leased worker on two queues, the first first, as the detector workers (live, then uploads)."""

    @classmethod
    def queues_to_take(cls, settings) -> list[str]:
        return [FIRST, SECOND]


class StoppedAsItTakes:
    """The Ctrl-C that lands after the job left its queue and before it is started: RQ's signal
    handler raises StopRequested wherever the worker is (here, as it goes to run the job)."""

    def execute_job(self, job, queue):
        raise StopRequested()


class LeasedStoppedAsItTakes(StoppedAsItTakes, TwoQueues):
    pass


class RQStoppedAsItTakes(StoppedAsItTakes, SimpleWorker):
    pass


def _where(redis_conn, job_id: str) -> dict:
    queues = {name: [j.decode() for j in redis_conn.lrange(f"rq:queue:{name}", 0, -1)] for name in (FIRST, SECOND)}
    return {"status": Job.fetch(job_id, connection=redis_conn, serializer="json").get_status(),
            "queued_at": [name for name, ids in queues.items() if job_id in ids],
            "first_in_line": queues[SECOND][:1] == [job_id]}


@pytest.mark.parametrize("worker_class", [RQStoppedAsItTakes, LeasedStoppedAsItTakes])
def test_a_stop_as_a_worker_takes_a_job_puts_the_job_back(settings, redis_conn, worker_class):
    """RQ alone (BLPOP over two queues) loses the job: status queued, in no queue, so neither RQ
    nor the reconciler ever runs it. A Verity worker puts it back at the head of its queue."""
    later = Queue(SECOND, connection=redis_conn, serializer="json")
    job, behind = later.enqueue("time.sleep", 0), later.enqueue("time.sleep", 0)
    queues = [Queue(n, connection=redis_conn, serializer="json") for n in (FIRST, SECOND)]
    if worker_class is RQStoppedAsItTakes:
        worker = worker_class(queues, connection=redis_conn, serializer="json")
    else:
        worker = worker_class(context=configure(settings))
    worker.work(burst=True, with_scheduler=False, logging_level="WARNING")
    where = _where(redis_conn, job.id)
    if worker_class is RQStoppedAsItTakes:
        assert where == {"status": JobStatus.QUEUED, "queued_at": [], "first_in_line": False}  # lost
        return
    assert where == {"status": JobStatus.QUEUED, "queued_at": [SECOND], "first_in_line": True}
    assert _where(redis_conn, behind.id)["queued_at"] == [SECOND]
    assert not redis_conn.exists(holding_key(worker.name))
    TwoQueues(context=configure(settings)).work(burst=True, with_scheduler=False, logging_level="WARNING")
    assert Job.fetch(job.id, connection=redis_conn, serializer="json").get_status() == JobStatus.FINISHED


class StopAsItIsRead(Job):
    """The stop that lands while the worker reads the record of the job it has just taken."""

    @classmethod
    def fetch(cls, *args, **kwargs):
        raise StopRequested()


def test_a_stop_as_a_worker_reads_the_job_it_took_puts_the_job_back(settings, redis_conn):
    later = Queue(SECOND, connection=redis_conn, serializer="json")
    job = later.enqueue("time.sleep", 0)
    worker = TwoQueues(context=configure(settings), job_class=StopAsItIsRead)
    worker.work(burst=True, with_scheduler=False, logging_level="WARNING")
    assert _where(redis_conn, job.id) == {"status": JobStatus.QUEUED, "queued_at": [SECOND], "first_in_line": True}


def test_a_worker_takes_the_first_queue_first_and_leaves_nothing_held(settings, redis_conn):
    first = Queue(FIRST, connection=redis_conn, serializer="json")
    later = Queue(SECOND, connection=redis_conn, serializer="json")
    jobs = [later.enqueue("time.sleep", 0), first.enqueue("time.sleep", 0)]
    worker = TwoQueues(context=configure(settings))
    worker.work(burst=True, with_scheduler=False, logging_level="WARNING")
    ended = sorted(jobs, key=lambda j: Job.fetch(j.id, connection=redis_conn, serializer="json").ended_at)
    assert [j.origin for j in ended] == [FIRST, SECOND]
    assert not redis_conn.exists(holding_key(worker.name))
    assert worker.name.encode() not in redis_conn.smembers(LEASED_WORKERS_KEY)  # it stopped: nothing to sweep


def _idle_worker(redis_conn, name: str):
    """A leased worker on FIRST and SECOND, idle and blocked on their wake lists in a thread:
    (the thread, the list its take lands in, its queues)."""
    import threading

    held = HoldingQueue.for_worker(name)
    queues = [held(FIRST, connection=redis_conn, serializer="json"), held(SECOND, connection=redis_conn, serializer="json")]
    taken: list = []
    waiting = threading.Thread(target=lambda: taken.append(
        held._take(queues, time.monotonic() + 3600, redis_conn)), daemon=True)
    waiting.start()
    time.sleep(0.3)  # the worker is now blocked on the wake lists
    return waiting, taken, queues


def test_an_idle_worker_on_two_queues_is_woken_by_a_job_on_the_later_one(settings, redis_conn, monkeypatch):
    """An upload (the detector workers' second queue) is taken as soon as it is pushed, not after
    the worker's poll of its other queues: the poll is made an hour here, so only the wake token
    the push leaves can end the wait. (Before: blocked on the live queue for 0.5 s at a time, an
    idle service added up to 0.5 s to every upload, bench/service.py's latency.)"""
    from core.queue import WAKE_MAX, WakingQueue, wake_key
    from workers import lease

    monkeypatch.setattr(lease, "POLL_SECONDS", 3600.0)
    waiting, taken, queues = _idle_worker(redis_conn, "verity-test-waker")
    job = WakingQueue(SECOND, connection=redis_conn, serializer="json").enqueue("time.sleep", 0)
    waiting.join(timeout=20)
    assert not waiting.is_alive(), "the push did not wake the idle worker"
    assert taken == [(job.id, queues[1])] and redis_conn.lrange(holding_key("verity-test-waker"), 0, -1) == [job.id.encode()]
    redis_conn.delete(holding_key("verity-test-waker"))

    # tokens nobody waited for are trimmed, not kept for ever
    many = WakingQueue(FIRST, connection=redis_conn, serializer="json")
    with redis_conn.pipeline() as pipe:
        for i in range(WAKE_MAX + 20):
            many.push_job_id(f"no-such-job-{i}", pipeline=pipe)
        pipe.execute()
    assert redis_conn.llen(wake_key(FIRST)) == WAKE_MAX
    redis_conn.delete(many.key, wake_key(FIRST))


def test_a_job_put_back_from_a_workers_list_wakes_an_idle_worker(settings, redis_conn, monkeypatch):
    """A dead or stopped worker's job goes back to the head of its queue with a wake token, so an
    idle worker takes it at once instead of at its next poll (made an hour here)."""
    from core.queue import wake_key
    from workers import lease

    monkeypatch.setattr(lease, "POLL_SECONDS", 3600.0)
    job = Queue(SECOND, connection=redis_conn, serializer="json").enqueue("time.sleep", 0)
    redis_conn.lrem(f"rq:queue:{SECOND}", 1, job.id)  # as if a worker had moved it into its own list
    redis_conn.rpush(holding_key("verity-test-gone"), job.id)
    waiting, taken, queues = _idle_worker(redis_conn, "verity-test-idle")
    assert lease.put_back_held_jobs(redis_conn, "verity-test-gone") == [job.id]
    waiting.join(timeout=20)
    assert not waiting.is_alive(), "the put-back did not wake the idle worker"
    assert taken == [(job.id, queues[1])]
    assert not redis_conn.exists(holding_key("verity-test-gone"))
    redis_conn.delete(holding_key("verity-test-idle"), wake_key(SECOND))


def test_the_services_queues_leave_wake_tokens(settings, redis_conn):
    from core.queue import analysis_queue, live_queue, wake_key

    for queue in (analysis_queue(settings, redis_conn), live_queue(settings, redis_conn)):
        before = redis_conn.llen(wake_key(queue.name))
        queue.enqueue("time.sleep", 0)
        assert redis_conn.llen(wake_key(queue.name)) == before + 1
        queue.empty()
        redis_conn.delete(wake_key(queue.name))


DIES_AS_IT_TAKES = """
import os, signal, sys
sys.path.insert(0, "tests")
from test_worker_lease import TwoQueues

class Dies(TwoQueues):
    def execute_job(self, job, queue):
        print("taken", job.id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

Dies().work(with_scheduler=False)
"""


def test_a_worker_killed_as_it_takes_a_job_has_it_put_back_by_a_live_worker(settings, redis_conn, tmp_path):
    later = Queue(SECOND, connection=redis_conn, serializer="json")
    job = later.enqueue("time.sleep", 0)
    env = {**os.environ, "REDIS_URL": settings.redis_url, "DATABASE_URL": settings.database_url,
           "VERITY_DATA_DIR": str(settings.data_dir)}
    out = subprocess.run([sys.executable, "-c", DIES_AS_IT_TAKES], cwd=REPO, env=env, capture_output=True, check=False,
                         text=True, timeout=120)
    assert out.returncode == -signal.SIGKILL and f"taken {job.id}" in out.stdout, out.stderr[-2000:]
    killed_at = time.monotonic()
    assert _where(redis_conn, job.id)["queued_at"] == []  # in the dead worker's hand only
    live = TwoQueues(context=configure(settings))
    live.register_birth()
    try:
        assert live._sweep() == [] and _where(redis_conn, job.id)["queued_at"] == []  # its lease still runs

        def put_back():
            live._sweep()
            return _where(redis_conn, job.id)["queued_at"] == [SECOND]

        wait_for(put_back, LEASE_TTL_SECONDS + SWEEP_SECONDS + 10, "the dead worker's job to be queued again",
                 interval=SWEEP_SECONDS)
        print(f"\njob queued again {time.monotonic() - killed_at:.1f} s after the SIGKILL")
    finally:
        live.register_death()
    assert Job.fetch(job.id, connection=redis_conn, serializer="json").retries_left is None  # no retry spent
    TwoQueues(context=configure(settings)).work(burst=True, with_scheduler=False, logging_level="WARNING")
    assert Job.fetch(job.id, connection=redis_conn, serializer="json").get_status() == JobStatus.FINISHED


def test_a_killed_workers_job_is_retried_once_its_lease_lapses(settings, redis_conn, tmp_path):
    queue = Queue(settings.queue_name, connection=redis_conn, serializer="json")
    job = queue.enqueue("time.sleep", 120, job_timeout=600, retry=Retry(max=1))
    env = {**os.environ, "REDIS_URL": settings.redis_url, "DATABASE_URL": settings.database_url,
           "VERITY_DATA_DIR": str(settings.data_dir), "VERITY_DEVICE": "cpu", "VERITY_JOB_TIMEOUT": "600"}
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "cli", "worker", "-n", "1"], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: Job.fetch(job.id, connection=redis_conn, serializer="json").get_status() == JobStatus.STARTED,
              120, "the worker to start the job")
        names = [k.decode().split(":", 2)[2] for k in redis_conn.scan_iter("verity:lease:*")]
        assert len(names) == 1, names
        # A live worker's execution is never taken from it, however long its job runs.
        assert expire_dead_executions(redis_conn, [queue]) == []
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        killed_at = time.monotonic()
        assert redis_conn.exists(leased_mark_key(names[0]))

        def handed_back():
            if expire_dead_executions(redis_conn, [queue]):
                clean_registries(queue)  # what the next maintenance of any worker runs
            return Job.fetch(job.id, connection=redis_conn, serializer="json").get_status() == JobStatus.QUEUED

        wait_for(handed_back, LEASE_TTL_SECONDS + 15, "the dead worker's job to be queued again")
        waited = time.monotonic() - killed_at
        print(f"\njob handed back {waited:.1f} s after the SIGKILL (RQ alone: job timeout + 60 s = 660 s)")
        assert not redis_conn.exists(lease_key(names[0]))
        assert job.id in queue.job_ids
        assert Job.fetch(job.id, connection=redis_conn, serializer="json").retries_left == 0  # one retry used
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        log.close()


def test_workers_without_a_lease_are_left_to_rqs_timeout(redis_conn, settings):
    """A plain `rq worker` (no lease ever taken) is not declared dead by Verity's workers."""
    queue = Queue(settings.queue_name, connection=redis_conn, serializer="json")
    job = queue.enqueue("time.sleep", 1)
    composite = f"{job.id}:exec1"
    redis_conn.zadd(queue.started_job_registry.key, {composite: time.time() + 600})
    redis_conn.hset(f"rq:execution:{composite}", mapping={"worker_name": "plain-rq-worker"})
    assert expire_dead_executions(redis_conn, [queue]) == []
    assert redis_conn.zscore(queue.started_job_registry.key, composite) > time.time()


def test_a_dead_workers_execution_is_handed_back_only_under_the_registry_lock(redis_conn, settings):
    """A registry cleanup ends by removing every expired entry, read or not: an execution expired
    while another worker cleaned was dropped unretried, its job `started` for ever. So the sweep
    expires one only while it holds RQ's registry-cleaning lock, and retries it then and there."""
    queue = Queue(settings.queue_name, connection=redis_conn, serializer="json")
    job = queue.enqueue("time.sleep", 0, retry=Retry(max=1))
    assert queue.pop_job_id() == job.id  # taken by a worker ...
    composite = f"{job.id}:exec1"
    redis_conn.zadd(queue.started_job_registry.key, {composite: time.time() + 600})
    redis_conn.hset(f"rq:execution:{composite}", mapping={"worker_name": "dead-worker"})
    redis_conn.set(leased_mark_key("dead-worker"), 1)  # ... that held a lease, now lapsed
    job.set_status(JobStatus.STARTED)
    assert queue.acquire_maintenance_lock()  # another worker is cleaning this queue
    assert hand_back_dead_executions(redis_conn, [queue]) == []
    assert redis_conn.zscore(queue.started_job_registry.key, composite) > time.time()  # left for later
    queue.release_maintenance_lock()
    assert hand_back_dead_executions(redis_conn, [queue]) == [job.id]
    assert job.id in queue.job_ids
    assert Job.fetch(job.id, connection=redis_conn, serializer="json").retries_left == 0
    assert redis_conn.zcard(queue.started_job_registry.key) == 0


def test_a_cleaning_lock_left_by_a_killed_worker_lapses_in_a_minute_not_fifteen(redis_conn, settings):
    """A worker SIGKILLed while it cleans a queue never releases RQ's registry-cleaning lock, and
    the hand-back of dead workers' jobs waits for that lock: RQ's lives 899 s, Verity's queues'
    CLEANING_LOCK_SECONDS."""
    plain = Queue(settings.queue_name, connection=redis_conn, serializer="json")
    assert plain.acquire_maintenance_lock() and redis_conn.ttl(plain.registry_cleaning_key) > 850
    plain.release_maintenance_lock()
    ours = HoldingQueue.for_worker("cleaner")(settings.queue_name, connection=redis_conn, serializer="json")
    assert ours.acquire_maintenance_lock()  # ... and the worker is killed holding it
    assert 0 < redis_conn.ttl(ours.registry_cleaning_key) <= CLEANING_LOCK_SECONDS <= 60
    assert not ours.acquire_maintenance_lock() and not plain.acquire_maintenance_lock()  # still one lock
    worker = TwoQueues(context=configure(settings))  # a leased worker's queues take the short lock
    assert worker.queues and all(isinstance(q, HoldingQueue) for q in worker.queues)
