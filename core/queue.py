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


def analysis_queue(settings: Settings, connection: Redis) -> Queue:
    return Queue(settings.queue_name, connection=connection, serializer="json",
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
    return Queue(settings.live_queue, connection=connection, serializer="json",
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


def live_job_status(connection: Redis, job_id: str) -> str | None:
    """The job's status when it is queued, running or waiting for a retry; None otherwise."""
    try:
        job = Job.fetch(job_id, connection=connection, serializer="json")
    except NoSuchJobError:
        return None
    status = job.get_status(refresh=False)
    return str(status) if status in _LIVE else None


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
