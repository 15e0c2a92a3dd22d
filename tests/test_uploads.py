"""The door: validation before anything is stored, then row -> commit -> enqueue."""

from __future__ import annotations

import io

import pytest
from mediagen import jpeg_bytes, no_face_image, png_bomb, png_bytes
from rq.job import Job
from sqlalchemy import func, select

from core.models import AuditEvent, Upload


def post(client, data: bytes, name: str = "photo.jpg", url: str = "/api/v1/uploads", **kw):
    return client.post(url, data={"file": (io.BytesIO(data), name)}, content_type="multipart/form-data", **kw)


def count(app, model) -> int:
    with app.extensions["verity.db"].session() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_accepted_upload_is_committed_then_enqueued(app, client, redis_conn):
    data = jpeg_bytes(no_face_image())
    r = post(client, data, name="../../etc/passwd.jpg")
    assert r.status_code == 202, r.get_json()
    body = r.get_json()
    assert body["status"] == "queued" and body["links"]["self"] == f"/api/v1/uploads/{body['id']}"
    with app.extensions["verity.db"].session() as s:
        up = s.get(Upload, body["id"])
        assert up.status == "queued" and up.kind == "image" and up.mime == "image/jpeg"
        assert up.bytes == len(data) and up.source == "api" and up.filename == "etc_passwd.jpg"
        assert (up.width, up.height) == (800, 600)
        assert s.scalar(select(AuditEvent.action).where(AuditEvent.upload_id == up.id)) == "upload.accepted"
    assert app.extensions["verity.storage"].exists(up.sha256)
    job = Job.fetch(body["id"], connection=redis_conn, serializer="json")
    assert job.func_name == "workers.jobs.analyze_upload" and job.args == [body["id"]]
    assert job.retries_left == 2  # the test settings' two immediate retries
    assert job.failure_callback is not None
    g = client.get(body["links"]["self"]).get_json()
    assert g["status"] == "queued" and g["analysis"] is None
    assert r.headers["X-Request-ID"]


@pytest.mark.parametrize("data,name", [
    (b"<html><script>alert(1)</script></html>", "photo.jpg"),
    (b"%PDF-1.7\n" + b"x" * 500, "scan.png"),
    (b"just some text, not media", "clip.mp4"),
])
def test_type_is_sniffed_from_the_bytes_not_the_name(app, client, data, name):
    r = post(client, data, name=name)
    assert r.status_code == 415
    body = r.get_json()
    assert body["code"] == "unsupported_type" and body["request_id"] and body["message"]
    assert count(app, Upload) == 0


def test_undecodable_header_is_422(app, client):
    truncated = jpeg_bytes(no_face_image())[:300]
    for data in (b"\xff\xd8\xff\xe0" + b"\x00" * 600, truncated, png_bomb()):
        r = post(client, data)
        assert r.status_code == 422, (r.status_code, r.get_json())
        assert r.get_json()["code"] == "unreadable"
    assert count(app, Upload) == 0


def test_empty_file_is_422(client):
    r = post(client, b"")
    assert r.status_code == 422


def test_over_the_size_limit_is_413(settings, redis_conn, authorize):
    from app import create_app

    app = create_app({"VERITY": settings.with_(max_upload_bytes=10_000), "TESTING": True})
    client = app.test_client()
    authorize(app, client)
    big = png_bytes(no_face_image((600, 600)))
    r = post(client, big + b"\x00" * 100_000)
    assert r.status_code == 413
    assert r.get_json()["code"] == "too_large"
    # under Flask's request cap but over the file limit: counted while spooling
    r = post(client, b"\xff\xd8\xff" + b"\x00" * 20_000)
    assert r.status_code == 413
    assert count(app, Upload) == 0


def test_missing_file_field_is_400(client):
    r = client.post("/api/v1/uploads", data={"other": "x"})
    assert r.status_code == 400 and r.get_json()["code"] == "missing_file"


def test_unknown_upload_is_404(client):
    r = client.get("/api/v1/uploads/0123456789abcdef0123456789abcdef")
    assert r.status_code == 404 and r.get_json()["code"] == "not_found"


def test_enqueue_failure_after_commit_keeps_the_upload(settings, redis_conn, authorize):
    """Redis down at enqueue time: the upload is still accepted and recorded as queued."""
    from app import create_app

    app = create_app({"VERITY": settings.with_(redis_url="redis://127.0.0.1:1/0"), "TESTING": True})
    client = app.test_client()
    authorize(app, client)
    r = post(client, jpeg_bytes(no_face_image()))
    assert r.status_code == 202
    with app.extensions["verity.db"].session() as s:
        assert s.get(Upload, r.get_json()["id"]).status == "queued"


def test_page_post_needs_a_csrf_token(settings, redis_conn, authorize):
    from app import create_app

    app = create_app({"VERITY": settings, "TESTING": True})  # CSRF on, as in production
    client = app.test_client()
    r = post(client, jpeg_bytes(no_face_image()), url="/upload")
    assert r.status_code == 400
    page = client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    for el in ('id="dropzone"', 'id="file-input"', 'id="progress"', 'id="status"', 'id="outcome"'):
        assert el in html
    token = html.split('name="csrf-token" content="')[1].split('"')[0]
    r = post(client, jpeg_bytes(no_face_image()), url="/upload", headers={"X-CSRFToken": token})
    assert r.status_code == 202
    status = client.get(r.get_json()["links"]["status"]).get_json()
    assert status["status"] == "queued" and status["terminal"] is False
    # the API is not cookie-authenticated: no CSRF token needed there, a Bearer key instead
    authorize(app, client)
    assert post(client, jpeg_bytes(no_face_image())).status_code == 202
