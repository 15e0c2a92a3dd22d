"""Upload -> RQ -> DetectorWorker -> analysis -> routing, on the real detector and Redis."""

from __future__ import annotations

import io

from mediagen import face_image, jpeg_bytes, no_face_image
from sqlalchemy import func, select

from core.models import Analysis, AuditEvent, ReviewItem, Upload


def post(client, data: bytes, name: str = "photo.jpg"):
    r = client.post("/api/v1/uploads", data={"file": (io.BytesIO(data), name)},
                    content_type="multipart/form-data")
    assert r.status_code == 202, r.get_json()
    return r.get_json()["id"]


def session(app):
    return app.extensions["verity.db"].session()


def expected_status(score: float, det) -> str:
    t = det.manifest.thresholds
    return "blocked" if score >= t.block else "in_review" if score >= t.review else "cleared"


def test_face_photo_gets_an_analysis_and_the_status_its_score_calls_for(app, client, run_jobs, shared_detector):
    uid = post(client, jpeg_bytes(face_image((1280, 720), 500)))
    run_jobs()
    body = client.get(f"/api/v1/uploads/{uid}").get_json()
    a = body["analysis"]
    assert a is not None, body
    assert a["label"] in ("likely_authentic", "suspected_fake")
    assert 0.0 <= a["score"] <= 1.0 and a["faces"] >= 1
    assert a["model"] == {"name": shared_detector.model_name, "version": shared_detector.model_version}
    assert a["reused"] is False and a["provider"] == "CPUExecutionProvider"
    assert body["status"] == expected_status(a["score"], shared_detector)
    with session(app) as s:
        up = s.get(Upload, uid)
        assert len(up.analyses) == 1 and up.analyses[0].evidence["frames"][0]["faces"]
        actions = s.scalars(select(AuditEvent.action).where(AuditEvent.upload_id == uid).order_by(AuditEvent.id)).all()
        assert actions == ["upload.accepted", "analysis.started", "analysis.routed"]  # every status change
        item = s.scalar(select(ReviewItem).where(ReviewItem.upload_id == uid))
        assert (item is not None) == (body["status"] != "cleared")


def test_no_face_image_is_labelled_no_face_never_authentic(app, client, run_jobs):
    uid = post(client, jpeg_bytes(no_face_image()))
    run_jobs()
    body = client.get(f"/api/v1/uploads/{uid}").get_json()
    assert body["analysis"]["label"] == "no_face"
    assert body["analysis"]["score"] is None
    assert body["status"] == "cleared"
    assert body["analysis"]["reasons"]


def test_same_bytes_twice_run_the_detector_once(app, client, run_jobs):
    data = jpeg_bytes(face_image((960, 540), 400))
    first = post(client, data)
    run_jobs()
    second = post(client, data, name="again.jpg")
    run_jobs()
    a1 = client.get(f"/api/v1/uploads/{first}").get_json()
    a2 = client.get(f"/api/v1/uploads/{second}").get_json()
    assert a2["analysis"]["reused"] is True and a1["analysis"]["reused"] is False
    assert a2["analysis"]["score"] == a1["analysis"]["score"]
    assert a2["status"] == a1["status"]
    with session(app) as s:
        rows = s.scalars(select(Analysis).order_by(Analysis.id)).all()
        assert len(rows) == 2
        assert rows[0].reused_from is None and rows[1].reused_from == rows[0].id


def test_a_job_that_keeps_failing_goes_to_review_after_its_retries(app, client, run_jobs, redis_conn):
    from rq.job import Job

    uid = post(client, jpeg_bytes(face_image((640, 480), 300)))
    with session(app) as s:
        sha = s.get(Upload, uid).sha256
    app.extensions["verity.storage"].delete(sha)  # the blob is gone: every attempt raises
    run_jobs()
    body = client.get(f"/api/v1/uploads/{uid}").get_json()
    assert body["status"] == "in_review"
    assert body["review"] == {"reason": "analysis_failed", "state": "open"}
    job = Job.fetch(uid, connection=redis_conn, serializer="json")
    assert job.get_status() == "failed" and job.retries_left == 0
    with session(app) as s:
        failed = s.scalars(select(AuditEvent).where(AuditEvent.action == "analysis.failed")).all()
        assert len(failed) == 1 and "BlobNotFound" in failed[0].detail["error"]
        assert s.scalar(select(func.count()).select_from(Analysis)) == 0


def test_running_the_job_twice_stores_one_analysis_and_one_review_item(app, client, run_jobs, settings,
                                                                        shared_detector):
    from workers.context import configure
    from workers.jobs import analyze_upload

    uid = post(client, jpeg_bytes(face_image((640, 480), 300)))
    configure(settings, detector=shared_detector)
    first = analyze_upload(uid)
    again = analyze_upload(uid)
    assert "skipped" in again
    with session(app) as s:
        assert s.scalar(select(func.count()).select_from(Analysis)) == 1
        assert s.scalar(select(func.count()).select_from(ReviewItem)) == (0 if first["status"] == "cleared" else 1)


def test_reconciler_re_enqueues_a_job_redis_lost(app, client, run_jobs, settings, redis_conn):
    from workers.reconcile import reconcile

    uid = post(client, jpeg_bytes(no_face_image()))
    redis_conn.flushdb()  # Redis lost everything after the commit
    run_jobs()
    assert client.get(f"/api/v1/uploads/{uid}").get_json()["status"] == "queued"
    db, lifecycle = app.extensions["verity.db"], app.extensions["verity.lifecycle"]
    assert reconcile(settings, db, lifecycle, redis_conn) == []  # not overdue yet
    assert reconcile(settings, db, lifecycle, redis_conn, stuck_after=0) == [uid]
    assert reconcile(settings, db, lifecycle, redis_conn, stuck_after=0) == []  # its job is live now
    run_jobs()
    assert client.get(f"/api/v1/uploads/{uid}").get_json()["status"] == "cleared"


def test_reconciler_re_enqueues_a_job_a_worker_lost_between_queue_and_start(app, client, run_jobs, settings,
                                                                            redis_conn):
    """RQ's BLPOP over several queues, and a worker stopped right after it, left a job whose record
    says queued in no queue: nothing would ever run it. A job in a worker's own list is not lost."""
    from core.queue import LEASED_WORKERS_KEY, holding_key
    from workers.reconcile import reconcile

    uid = post(client, jpeg_bytes(no_face_image()))
    queue_key = f"rq:queue:{settings.queue_name}"
    db, lifecycle = app.extensions["verity.db"], app.extensions["verity.lifecycle"]
    redis_conn.sadd(LEASED_WORKERS_KEY, "busy-worker")
    redis_conn.lmove(queue_key, holding_key("busy-worker"))  # taken, about to start
    assert reconcile(settings, db, lifecycle, redis_conn, stuck_after=0) == []
    redis_conn.delete(holding_key("busy-worker"))  # ...and lost
    assert redis_conn.lrange(queue_key, 0, -1) == []
    assert reconcile(settings, db, lifecycle, redis_conn, stuck_after=0) == [uid]
    assert redis_conn.lrange(queue_key, 0, -1) == [uid.encode()]
    run_jobs()
    assert client.get(f"/api/v1/uploads/{uid}").get_json()["status"] == "cleared"


def test_reconciler_re_enqueues_a_job_recorded_started_that_runs_nowhere(app, client, run_jobs, settings,
                                                                        redis_conn):
    """RQ puts a job in its started registry, then records it started. A job in the registry is
    live whatever its record says; a job recorded started that is in no started registry (its
    entry dropped, its worker gone) runs nowhere, and the reconciler enqueues it again."""
    from rq.executions import Execution
    from rq.job import Job, JobStatus

    from workers.reconcile import reconcile

    uid = post(client, jpeg_bytes(no_face_image()))
    queue_key = f"rq:queue:{settings.queue_name}"
    db, lifecycle = app.extensions["verity.db"], app.extensions["verity.lifecycle"]
    job = Job.fetch(uid, connection=redis_conn, serializer="json")
    with redis_conn.pipeline() as pipe:  # a worker takes it: out of the queue, into the registry
        pipe.lrem(queue_key, 1, uid)
        Execution.create(job, ttl=60, pipeline=pipe, worker_name="busy-worker")
        pipe.execute()
    registry = job.started_job_registry
    assert job.get_status() == JobStatus.QUEUED and len(registry) == 1
    assert reconcile(settings, db, lifecycle, redis_conn, stuck_after=0) == []  # between the two steps
    job.set_status(JobStatus.STARTED)
    assert reconcile(settings, db, lifecycle, redis_conn, stuck_after=0) == []  # running
    redis_conn.delete(registry.key)  # ...and lost
    assert reconcile(settings, db, lifecycle, redis_conn, stuck_after=0) == [uid]
    assert redis_conn.lrange(queue_key, 0, -1) == [uid.encode()]
    run_jobs()
    assert client.get(f"/api/v1/uploads/{uid}").get_json()["status"] == "cleared"


def test_page_status_hides_the_score_when_configured(settings, redis_conn, run_jobs):
    from app import create_app

    s = settings.with_(show_score=False)
    app = create_app({"VERITY": s, "TESTING": True, "WTF_CSRF_ENABLED": False})
    client = app.test_client()
    r = client.post("/upload", data={"file": (io.BytesIO(jpeg_bytes(face_image((640, 480), 300))), "f.jpg")},
                    content_type="multipart/form-data")
    assert r.status_code == 202
    run_jobs(s)
    body = client.get(r.get_json()["links"]["status"]).get_json()
    assert body["terminal"] is True and body["outcome"]
    assert "score" not in body["analysis"]
    assert "SHOW_SCORE = false" in client.get("/").get_data(as_text=True)


def test_workers_run_the_reconciler_in_their_maintenance(app, client, settings, redis_conn, shared_detector):
    from rq import Queue

    from workers.context import configure
    from workers.worker import DetectorWorker

    uid = post(client, jpeg_bytes(no_face_image()))
    redis_conn.flushdb()
    s = settings.with_(stuck_after=0)
    worker = DetectorWorker(context=configure(s, detector=shared_detector))
    worker.run_maintenance_tasks()
    q = Queue(s.queue_name, connection=redis_conn, serializer="json")
    assert q.job_ids == [uid]
    worker.run_maintenance_tasks()  # at most once per interval across workers (a Redis lock)
    assert q.job_ids == [uid]
