"""Live sessions (/api/v1/live, core/live.py): a platform follows a call segment by segment, with a
real detector worker (in process, and as its own process for the synchronous answer), real
Redis, the review queue and signed webhooks to a real receiver."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from apihelpers import bearer, make_key
from mediagen import REPO, face_image, jpeg_bytes, write_video
from sqlalchemy import select

from core import defaults
from core.models import LiveSegment, ReviewItem, Upload, WebhookDelivery
from core.webhooks.signing import verify


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("live-clips")
    face = face_image((640, 480), face_height=260)
    return {"face": write_video(d / "face.mp4", face, seconds=2.0, fps=15),
            "long": write_video(d / "long.mp4", face.resize((160, 120)), seconds=12.0, fps=5),
            "frames": [jpeg_bytes(face.rotate(a)) for a in (0, 1, 2, 1, 0)],
            "webm": write_video(d / "chunk.webm", face, seconds=1.5, fps=10, codec="libvpx")}


def _open(c, key, **body):
    r = c.post("/api/v1/live", headers=bearer(key), json=body)
    assert r.status_code == 201, r.get_json()
    assert r.headers["Location"] == f"/api/v1/live/{r.get_json()['id']}"
    return r.get_json()


def _segment(c, key, sid, path, start=0.0, wait="0", **extra):
    data = {"file": (io.BytesIO(path.read_bytes()), path.name), "start": str(start), **extra}
    return c.post(f"/api/v1/live/{sid}/segments?wait={wait}", headers=bearer(key), data=data)


def _webhooks(api_settings):
    from workers.context import configure
    from workers.webhooks import WebhookWorker

    WebhookWorker(context=configure(api_settings)).work(burst=True, with_scheduler=False, logging_level="WARNING")


def test_a_call_is_followed_suspected_reviewed_and_ended(api_app, api_settings, receiver, run_jobs, clips):
    key = make_key(api_app, "caller", webhook_url=receiver.url, show_score=True, review_threshold=0.05,
                   block_threshold=0.99)
    c = api_app.test_client()
    live = _open(c, key, external_id="call-42/participant-7")
    assert live["state"] == "open" and live["verdict"] == "pending" and live["timeline"] == []

    r = _segment(c, key, live["id"], clips["face"], start=0.0)
    assert r.status_code == 202, r.get_json()  # wait=0: queued, not answered yet
    body = r.get_json()
    assert body["answered"] is False and body["segment"]["state"] == "queued" and body["segment"]["seq"] == 0

    run_jobs(api_settings)
    s = c.get(f"/api/v1/live/{live['id']}", headers=bearer(key)).get_json()
    seg = s["timeline"][0]
    assert seg["state"] == "analyzed" and seg["faces"] >= 1 and seg["score"] is not None
    assert seg["occlusion"]["checked"] is True  # a steady face: tracked, nothing passed in front of it
    assert s["verdict"] == "suspected" and s["score"] >= 0.05 and s["suspected_at"]
    review = s["review"]
    assert review["status"] == "in_review"

    # The worst segment is in the review queue, first in line, with the session's timeline.
    with api_app.extensions["verity.db"].session() as db:
        upload = db.get(Upload, review["upload_id"])
        assert upload.source == "live" and upload.metadata_json == {"live_session_id": live["id"]}
        assert upload.external_id == "call-42/participant-7"
        item = db.scalar(select(ReviewItem).where(ReviewItem.upload_id == upload.id))
        assert item.reason == "live_suspected" and item.priority == 40
        assert upload.latest_analysis.evidence["live"]["segments"][0]["seq"] == 0

    # A second segment: the session stays suspected (once), the reviewer's timeline grows.
    assert _segment(c, key, live["id"], clips["face"], start=2.0).status_code == 202
    run_jobs(api_settings)
    s = c.get(f"/api/v1/live/{live['id']}", headers=bearer(key)).get_json()
    assert [x["seq"] for x in s["timeline"]] == [0, 1] and s["segments"]["analyzed"] == 2
    with api_app.extensions["verity.db"].session() as db:
        evidence = db.get(Upload, review["upload_id"]).latest_analysis.evidence
        assert len(evidence["live"]["segments"]) == 2

    ended = c.delete(f"/api/v1/live/{live['id']}", headers=bearer(key))
    assert ended.status_code == 200
    e = ended.get_json()
    assert e["state"] == "ended" and e["ended_by"] == "client" and e["verdict"] == "suspected"
    assert c.delete(f"/api/v1/live/{live['id']}", headers=bearer(key)).get_json()["ended_at"] == e["ended_at"]
    refused = _segment(c, key, live["id"], clips["face"], start=4.0)
    assert refused.status_code == 409 and refused.get_json()["code"] == "session_ended"

    # Signed webhooks: live.suspected once, live.ended once; no upload.analyzed for the review record.
    _webhooks(api_settings)
    events = [(q["headers"].get("Verity-Event"), json.loads(q["body"])) for q in receiver.requests]
    assert [ev for ev, _ in events] == ["live.suspected", "live.ended"], events
    assert events[0][1]["id"] == live["id"] and events[0][1]["verdict"] == "suspected"
    assert events[1][1]["state"] == "ended"
    secret = _secret(api_app, "caller")
    for q in receiver.requests:
        assert verify(secret, q["headers"], q["body"])
    with api_app.extensions["verity.db"].session() as db:
        assert db.scalar(select(WebhookDelivery).where(WebhookDelivery.upload_id == review["upload_id"])) is None


def _secret(app, name):
    from core.models import ApiClient

    with app.extensions["verity.db"].session() as db:
        return db.scalar(select(ApiClient.webhook_secret).where(ApiClient.name == name))


def test_jpeg_frames_segment_and_a_clean_call(api_app, api_settings, run_jobs, clips):
    key = make_key(api_app, "frames", show_score=True, review_threshold=1.0, block_threshold=1.0)
    c = api_app.test_client()
    live = _open(c, key, webhook=False)
    data = {"frame": [(io.BytesIO(b), f"f{i}.jpg") for i, b in enumerate(clips["frames"])], "start": "12.5",
            "fps": "5"}
    r = c.post(f"/api/v1/live/{live['id']}/segments?wait=0", headers=bearer(key), data=data)
    assert r.status_code == 202, r.get_json()
    seg = r.get_json()["segment"]
    assert seg["kind"] == "frames" and seg["duration"] == pytest.approx(0.8) and seg["start"] == 12.5
    run_jobs(api_settings)
    s = c.get(f"/api/v1/live/{live['id']}?wait=2", headers=bearer(key)).get_json()
    assert s["timeline"][0]["state"] == "analyzed" and s["timeline"][0]["faces"] == 5
    assert s["verdict"] == "no_sign" and s["review"] is None
    # A WebM chunk as a browser's MediaRecorder writes it (VP8), sent as the raw body.
    r = c.post(f"/api/v1/live/{live['id']}/segments?wait=0&start=13.3", headers={**bearer(key), "Content-Type": "video/webm"},
               data=clips["webm"].read_bytes())
    assert r.status_code == 202 and r.get_json()["segment"]["kind"] == "video", r.get_json()
    run_jobs(api_settings)
    s = c.get(f"/api/v1/live/{live['id']}", headers=bearer(key)).get_json()
    assert s["timeline"][1]["state"] == "analyzed" and s["timeline"][1]["start"] == 13.3 and s["timeline"][1]["faces"] >= 1


def test_refusals_are_clear(api_app, api_settings, clips, monkeypatch):
    key = make_key(api_app, "limits")
    other = make_key(api_app, "other")
    c = api_app.test_client()
    live = _open(c, key)
    sid = live["id"]

    def code(r):
        return r.status_code, r.get_json()["code"]

    no_start = c.post(f"/api/v1/live/{sid}/segments", headers=bearer(key),
                      data={"file": (io.BytesIO(clips["face"].read_bytes()), "a.mp4")})
    assert code(no_start) == (400, "invalid_request") and "start" in no_start.get_json()["message"]
    assert code(_segment(c, key, sid, clips["long"])) == (422, "segment_length")
    long_sha = hashlib.sha256(clips["long"].read_bytes()).hexdigest()
    assert not api_app.extensions["verity.storage"].exists(long_sha)  # refused before it was stored
    one = c.post(f"/api/v1/live/{sid}/segments", headers=bearer(key),
                 data={"frame": [(io.BytesIO(clips["frames"][0]), "f.jpg")], "start": "0"})
    assert code(one) == (422, "invalid_request")
    text = c.post(f"/api/v1/live/{sid}/segments", headers=bearer(key),
                  data={"file": (io.BytesIO(b"hello, not a video" * 10), "a.mp4"), "start": "0"})
    assert code(text) == (415, "unsupported_type")
    assert code(_segment(c, other, sid, clips["face"])) == (404, "not_found")
    assert c.get(f"/api/v1/live/{sid}", headers=bearer(other)).status_code == 404
    assert code(c.post("/api/v1/live", headers=bearer(key), json={"external_id": "x\x00"})) == (422, "invalid_request")

    monkeypatch.setattr(defaults, "LIVE_SEGMENT_MAX_BYTES", 1000)
    assert code(_segment(c, key, sid, clips["face"])) == (413, "too_large")
    monkeypatch.setattr(defaults, "LIVE_MAX_SEGMENTS", 0)
    assert code(_segment(c, key, sid, clips["face"])) == (409, "too_many_segments")
    monkeypatch.setattr(defaults, "LIVE_MAX_OPEN_SESSIONS", 1)
    r = c.post("/api/v1/live", headers=bearer(key), json={})
    assert code(r) == (429, "too_many_sessions") and r.headers["Retry-After"]
    # Nothing refused was stored as a segment.
    with api_app.extensions["verity.db"].session() as db:
        assert db.scalars(select(LiveSegment)).all() == []


def test_expired_session_refuses_segments_and_a_failed_segment_is_reported(api_app, api_settings, run_jobs, clips):
    from datetime import timedelta

    from core.models import LiveSession, utcnow

    key = make_key(api_app, "expiry", show_score=True)
    c = api_app.test_client()
    live = _open(c, key)
    assert _segment(c, key, live["id"], clips["face"]).status_code == 202
    # The blob vanished before the worker came (a broken store): the segment fails, the session goes on.
    with api_app.extensions["verity.db"].session() as db:
        seg = db.scalar(select(LiveSegment).where(LiveSegment.session_id == live["id"]))
        api_app.extensions["verity.storage"].delete(seg.sha256)
    run_jobs(api_settings)
    s = c.get(f"/api/v1/live/{live['id']}", headers=bearer(key)).get_json()
    assert s["timeline"][0]["state"] == "failed" and s["timeline"][0]["error"]
    assert s["segments"] == {"received": 1, "analyzed": 0, "queued": 0, "failed": 1} and s["state"] == "open"

    with api_app.extensions["verity.db"].session() as db:
        db.get(LiveSession, live["id"]).expires_at = utcnow() - timedelta(seconds=1)
        db.commit()
    r = _segment(c, key, live["id"], clips["face"])
    assert r.status_code == 409 and r.get_json()["code"] == "session_ended"
    assert c.get(f"/api/v1/live/{live['id']}", headers=bearer(key)).get_json()["ended_by"] == "expiry"


def test_a_worker_process_answers_the_segment_request(api_app, api_settings, clips, tmp_path):
    """The synchronous path: POST waits for a real `verity worker` process and answers 200."""
    key = make_key(api_app, "sync", show_score=True)
    c = api_app.test_client()
    live = _open(c, key)
    env = {**os.environ, "REDIS_URL": api_settings.redis_url, "DATABASE_URL": api_settings.database_url,
           "VERITY_DATA_DIR": str(api_settings.data_dir), "VERITY_DEVICE": "cpu"}
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "cli", "worker", "-n", "1"], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        first = _segment(c, key, live["id"], clips["face"], wait="30")  # the worker loads its model meanwhile
        if first.status_code == 202:
            c.get(f"/api/v1/live/{live['id']}?wait=30", headers=bearer(key))
        s = c.get(f"/api/v1/live/{live['id']}", headers=bearer(key)).get_json()
        assert s["timeline"][0]["state"] == "analyzed", (tmp_path / "worker.log").read_text()
        t = time.monotonic()
        r = _segment(c, key, live["id"], clips["face"], start=2.0, wait="10")
        took = time.monotonic() - t
        assert r.status_code == 200
        body = r.get_json()
        assert body["answered"] is True and body["segment"]["state"] == "analyzed"
        assert body["segment"]["score"] is not None and body["session"]["segments"]["analyzed"] == 2
        print(f"\nsegment answered in {took * 1000:.0f} ms by a worker process")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_a_long_wait_without_a_worker_answers_202_not_an_error(api_app, clips):
    """The answer is awaited in short BLPOP slices: a wait past the connection's socket timeout
    (5 s) ends in a 202 and the stored segment, never a 500."""
    key = make_key(api_app, "patient")
    c = api_app.test_client()
    live = _open(c, key)
    t = time.monotonic()
    r = _segment(c, key, live["id"], clips["face"], wait="6.5")
    assert r.status_code == 202 and r.get_json()["answered"] is False
    assert 6.4 <= time.monotonic() - t < 15


def test_a_session_far_behind_its_worker_is_told_to_slow_down(api_app, api_settings, run_jobs, clips):
    key = make_key(api_app, "hurried")
    c = api_app.test_client()
    live = _open(c, key)
    for i in range(defaults.LIVE_MAX_QUEUED_SEGMENTS):
        assert _segment(c, key, live["id"], clips["face"], start=2.0 * i).status_code == 202
    r = _segment(c, key, live["id"], clips["face"], start=6.0)
    assert r.status_code == 429 and r.get_json()["code"] == "segments_behind" and r.headers["Retry-After"] == "2"
    run_jobs(api_settings)  # the worker catches up: the next segment is taken again
    assert _segment(c, key, live["id"], clips["face"], start=6.0).status_code == 202


def test_the_live_reconciler_requeues_what_redis_forgot_and_ends_idle_sessions(api_app, api_settings, run_jobs,
                                                                              clips, redis_conn):
    from datetime import timedelta

    from core.models import LiveSession, utcnow
    from workers.context import configure
    from workers.live import reconcile_live

    key = make_key(api_app, "forgotten", show_score=True)
    c = api_app.test_client()
    live = _open(c, key)
    idle = _open(c, key)
    assert _segment(c, key, live["id"], clips["face"]).status_code == 202
    redis_conn.flushdb()  # Redis lost the queue (restart without AOF): the segment's row is all that is left
    with api_app.extensions["verity.db"].session() as db:
        seg = db.scalar(select(LiveSegment).where(LiveSegment.session_id == live["id"]))
        seg.received_at = utcnow() - timedelta(seconds=60)
        db.get(LiveSession, idle["id"]).updated_at = utcnow() - timedelta(seconds=defaults.LIVE_IDLE_SECONDS + 1)
        db.commit()
    done = reconcile_live(configure(api_settings), redis_conn)
    assert done["requeued"] == [seg.id] and done["ended"] == [idle["id"]]
    run_jobs(api_settings)
    assert c.get(f"/api/v1/live/{live['id']}", headers=bearer(key)).get_json()["timeline"][0]["state"] == "analyzed"
    ended = c.get(f"/api/v1/live/{idle['id']}", headers=bearer(key)).get_json()
    assert ended["state"] == "ended" and ended["ended_by"] == "expiry"
