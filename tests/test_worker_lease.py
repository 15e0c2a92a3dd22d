"""A SIGKILLed worker's job is handed back within seconds of its lease lapsing, not after the job
timeout + 60 s that RQ alone needs for a SimpleWorker (workers/lease.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from mediagen import REPO
from rq import Queue, Retry
from rq.job import Job, JobStatus
from rq.registry import clean_registries
from waits import wait_for

from workers.lease import LEASE_TTL_SECONDS, expire_dead_executions, lease_key, leased_mark_key


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
