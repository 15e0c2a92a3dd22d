"""Liveness, readiness (DB, Redis, a live worker with its provider) and Prometheus metrics."""

from __future__ import annotations

import io

from mediagen import jpeg_bytes, no_face_image


def test_healthz_answers_without_dependencies(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_readyz_says_what_is_missing(client):
    r = client.get("/readyz")
    assert r.status_code == 503
    body = r.get_json()
    assert body["ready"] is False and body["missing"] == ["workers"]
    assert body["checks"]["database"]["ok"] and body["checks"]["redis"]["ok"]


def test_readyz_without_redis(settings, redis_conn):
    from app import create_app

    app = create_app({"VERITY": settings.with_(redis_url="redis://127.0.0.1:1/0"), "TESTING": True})
    body = app.test_client().get("/readyz").get_json()
    assert set(body["missing"]) == {"redis", "workers"}


def test_readyz_is_ready_with_a_live_worker_and_reports_its_provider(client, settings, shared_detector):
    from workers.context import configure
    from workers.worker import DetectorWorker

    worker = DetectorWorker(context=configure(settings, detector=shared_detector))
    worker.register_birth()
    worker.heartbeat()
    try:
        r = client.get("/readyz")
        assert r.status_code == 200, r.get_json()
        w = r.get_json()["checks"]["workers"]
        assert w["count"] == 1 and w["providers"] == ["CPUExecutionProvider"]
        assert w["data_licences"] == [shared_detector.manifest.licence_text]
        assert w["data_licences"][0].startswith("business use; trained on faces-canada (CC BY 4.0)")
        m = client.get("/metrics").get_data(as_text=True)
        assert 'verity_workers{model="' in m and 'provider="CPUExecutionProvider"' in m
    finally:
        worker.register_death()
    assert client.get("/readyz").status_code == 503


def test_metrics_report_uploads_queue_and_verdicts(client, run_jobs):
    r = client.post("/api/v1/uploads", data={"file": (io.BytesIO(jpeg_bytes(no_face_image())), "a.jpg")},
                    content_type="multipart/form-data")
    assert r.status_code == 202
    m = client.get("/metrics").get_data(as_text=True)
    assert 'verity_uploads{status="queued"} 1.0' in m
    assert 'verity_queue_jobs{state="queued"} 1.0' in m
    assert "verity_uploads_accepted_total" in m
    run_jobs()
    m = client.get("/metrics").get_data(as_text=True)
    assert 'verity_uploads{status="cleared"} 1.0' in m
    assert 'verity_verdicts_total{label="no_face",status="cleared"}' in m
    assert "verity_stage_duration_seconds_bucket" in m and "verity_job_duration_seconds_bucket" in m


def test_an_ops_token_guards_metrics_and_readiness_details(settings, redis_conn):
    """With VERITY_OPS_TOKEN set, /metrics needs it and /readyz shows only ready/not ready
    (its status code still serves load balancers); /healthz stays open."""
    from app import create_app

    token = "ops-token-0123456789"
    app = create_app({"VERITY": settings.with_(ops_token=token), "TESTING": True})
    c = app.test_client()
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": token}):
        r = c.get("/metrics", headers=headers)
        assert r.status_code == 401 and "verity_" not in r.get_data(as_text=True)
        r = c.get("/readyz", headers=headers)
        assert r.status_code == 503 and r.get_json() == {"ready": False}
    ok = {"Authorization": f"Bearer {token}"}
    assert "verity_uploads" in c.get("/metrics", headers=ok).get_data(as_text=True)
    assert c.get("/readyz", headers=ok).get_json()["missing"] == ["workers"]
    assert c.get("/healthz").status_code == 200
