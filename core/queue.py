"""The RQ side as the web app and the reconciler see it: connection, queue, enqueue."""

from __future__ import annotations

import logging

from redis import Redis
from rq import Callback, Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from core import defaults
from core.settings import Settings

log = logging.getLogger(__name__)

JOB_FUNC = "workers.jobs.analyze_upload"
FAILURE_CALLBACK = "workers.jobs.on_analysis_failure"


def redis_connection(settings: Settings) -> Redis:
    # No decode_responses: RQ does not support it (rq docs, "Connections").
    return Redis.from_url(settings.require_redis_url(), health_check_interval=30)


WAKE_PREFIX = "verity:wake:"
WAKE_MAX = 1000
"""Wake tokens kept per queue at most: a token only ends an idle worker's wait early, so the
ones no idle worker took (all were busy, and took the jobs straight from the queue) are trimmed."""


def wake_key(queue_name: str) -> str:
    """The list a queue's enqueues push a token onto: a detector worker takes from two queues
    (live segments, then uploads) and Redis cannot block on both while moving a job atomically into
    the worker's own list (BLMOVE reads one list), so an idle worker blocks on the queues' wake
    lists instead (BLPOP reads several) and, woken, moves the job with LMOVE (workers/lease.py)."""
    return WAKE_PREFIX + queue_name


class WakingQueue(Queue):
    """An RQ queue whose every push (enqueue, retry, requeue) also pushes a wake token, in the same
    pipeline or transaction as the job id."""

    def push_job_id(self, job_id: str, pipeline=None, at_front: bool = False):
        super().push_job_id(job_id, pipeline=pipeline, at_front=at_front)
        connection = pipeline if pipeline is not None else self.connection
        connection.rpush(wake_key(self.name), 1)
        connection.ltrim(wake_key(self.name), -WAKE_MAX, -1)


def analysis_queue(settings: Settings, connection: Redis) -> Queue:
    return WakingQueue(settings.queue_name, connection=connection, serializer="json",
                       default_timeout=settings.job_timeout)


def enqueue_analysis(settings: Settings, connection: Redis, upload_id: str, *, fresh: bool = False) -> Job:
    """Enqueue the analysis of an upload whose row is already committed. job_id = upload id, so
    enqueueing twice replaces a finished/failed job's record instead of running twice in parallel;
    a job that is still queued or running is left alone. `fresh`: the id was minted by this
    request, so no job can exist yet and the look-up is skipped."""
    queue = analysis_queue(settings, connection)
    if not fresh and live_job_status(connection, upload_id) is not None:
        return Job.fetch(upload_id, connection=connection, serializer="json")
    intervals = list(settings.job_retry_intervals)
    return queue.enqueue(
        JOB_FUNC,
        upload_id,
        job_id=upload_id,
        retry=Retry(max=len(intervals), interval=intervals),
        job_timeout=settings.job_timeout,
        result_ttl=settings.result_ttl,
        failure_ttl=settings.failure_ttl,
        on_failure=Callback(FAILURE_CALLBACK),
        description=f"analyze upload {upload_id}",
    )


SEGMENT_FUNC = "workers.live.analyze_segment"
SEGMENT_FAILURE_CALLBACK = "workers.live.on_segment_failure"


def live_queue(settings: Settings, connection: Redis) -> Queue:
    return WakingQueue(settings.live_queue, connection=connection, serializer="json",
                       default_timeout=defaults.LIVE_JOB_TIMEOUT_SECONDS)


def segment_job_id(segment_id: str) -> str:
    return f"live-{segment_id}"


def enqueue_segment(settings: Settings, connection: Redis, segment_id: str) -> Job:
    """A live segment's analysis: on the live queue, which detector workers take before uploads;
    one quick retry (an answer that comes late is worth less than the next segment's)."""
    return live_queue(settings, connection).enqueue(
        SEGMENT_FUNC, segment_id, job_id=segment_job_id(segment_id), retry=Retry(max=1, interval=[0]),
        job_timeout=defaults.LIVE_JOB_TIMEOUT_SECONDS, result_ttl=defaults.LIVE_RESULT_TTL_SECONDS,
        failure_ttl=settings.failure_ttl, on_failure=Callback(SEGMENT_FAILURE_CALLBACK),
        description=f"analyze live segment {segment_id}")


_LIVE = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED}

HOLDING_PREFIX = "verity:holding:"
"""A worker's own list: the job it took from a queue and has not started yet (workers/lease.py)."""
LEASED_WORKERS_KEY = "verity:leased-workers"
"""The names of the workers that may hold a job in their own list."""


def holding_key(worker_name: str) -> str:
    return HOLDING_PREFIX + worker_name


# Atomic, so that a job moving from its queue to a worker's list, to the started registry and to
# its end is seen in one of them: it reads the job's status and looks for the job in one script.
# KEYS: the job's hash, its queue, RQ's intermediate list, the leased-workers set, the started
# registry; ARGV: the job id, the prefix of a worker's own list. Returns the status, or "lost".
_WHERE_IS_IT = """
local status = redis.call('hget', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'started' then
    return status
end
local prefix = ARGV[1] .. ':'
local cursor = '0'
repeat
    local page = redis.call('zscan', KEYS[5], cursor, 'COUNT', 100)
    cursor = page[1]
    for i = 1, #page[2], 2 do
        if string.sub(page[2][i], 1, #prefix) == prefix then
            return status
        end
    end
until cursor == '0'
if status == 'started' then
    return 'lost'
end
local lists = {KEYS[2], KEYS[3]}
for _, worker in ipairs(redis.call('smembers', KEYS[4])) do
    table.insert(lists, ARGV[2] .. worker)
end
for _, key in ipairs(lists) do
    if redis.call('lpos', key, ARGV[1]) then
        return status
    end
end
return 'lost'
"""


def live_job_status(connection: Redis, job_id: str) -> str | None:
    """The job's status when it is queued, running or waiting for a retry; None otherwise.

    A job recorded queued that waits in no list (its queue, RQ's intermediate list, a worker's
    own list) and runs nowhere (its queue's started registry), or recorded started that runs
    nowhere, was lost by Redis or by a worker: it is not live, so the reconcilers enqueue it
    again. (RQ puts a job in the started registry before it records it started: a job between
    the two is queued and running, and live.)"""
    try:
        job = Job.fetch(job_id, connection=connection, serializer="json")
    except NoSuchJobError:
        return None
    if job.get_status(refresh=False) not in _LIVE:
        return None
    queue_key = Queue.redis_queue_namespace_prefix + job.origin
    status = connection.eval(_WHERE_IS_IT, 5, job.key, queue_key, f"{queue_key}:intermediate", LEASED_WORKERS_KEY,
                             job.started_job_registry.key, job_id, HOLDING_PREFIX)
    status = status.decode() if isinstance(status, bytes) else status
    if status == "lost":
        log.warning("job %s is recorded %s but waits and runs nowhere (lost by Redis or a worker): not live",
                    job_id, job.get_status(refresh=False))
        return None
    return status if status in _LIVE else None


WORKER_INFO_PREFIX = "verity:worker-info:"


def worker_info_key(worker_name: str) -> str:
    return WORKER_INFO_PREFIX + worker_name


def live_workers(connection: Redis, settings: Settings) -> list[dict]:
    """Info records (provider, model, version, pid, host) of the live workers on our queue."""
    import json

    from rq import Worker

    out = []
    for w in Worker.all(connection=connection, queue=analysis_queue(settings, connection)):
        raw = connection.get(worker_info_key(w.name))
        if raw:
            info = json.loads(raw)
            info["name"] = w.name
            info["state"] = str(w.get_state())
            out.append(info)
    return out
