"""Submits: multipart and raw body, idempotency (also under parallel requests), batch, reads,
long-poll, withdraw."""

from __future__ import annotations

import json
import threading
import time

import requests
from apihelpers import bearer, make_key, multipart
from mediagen import jpeg_bytes, no_face_image, png_bytes
from rq import Queue
from sqlalchemy import func, select

from core.models import Upload


def count_uploads(app) -> int:
    with app.extensions["verity.db"].session() as s:
        return s.scalar(select(func.count()).select_from(Upload))


def queued_jobs(app) -> int:
    s = app.config["VERITY"]
    return Queue(s.queue_name, connection=app.extensions["verity.redis"]).count


def test_multipart_and_raw_body_submits_with_external_id_and_metadata(api_app):
    key = make_key(api_app)
    c = api_app.test_client()
    img = jpeg_bytes(no_face_image())
    r = c.post("/api/v1/uploads", headers=bearer(key),
               data=multipart(img, external_id="post-1", metadata=json.dumps({"user": 7})))
    assert r.status_code == 202, r.get_json()
    a = r.get_json()
    assert a["status"] == "queued" and a["links"]["self"] == f"/api/v1/uploads/{a['id']}"
    assert r.headers["Location"] == a["links"]["self"]

    r = c.post("/api/v1/uploads?external_id=post-2", data=png_bytes(no_face_image()),
               headers={**bearer(key), "Content-Type": "image/png"})
    assert r.status_code == 202, r.get_json()
    b = r.get_json()
    got = c.get(f"/api/v1/uploads/{b['id']}", headers=bearer(key)).get_json()
    assert got["external_id"] == "post-2" and got["mime"] == "image/png" and got["terminal"] is False
    assert got["decision"] is None and got["analysis"] is None

    listed = c.get("/api/v1/uploads?external_id=post-1", headers=bearer(key)).get_json()["items"]
    assert [u["id"] for u in listed] == [a["id"]] and listed[0]["metadata"] == {"user": 7}

    # another key sees none of it
    other = make_key(api_app, "other")
    assert c.get(f"/api/v1/uploads/{a['id']}", headers=bearer(other)).status_code == 404
    assert c.get("/api/v1/uploads?external_id=post-1", headers=bearer(other)).get_json()["items"] == []

    bad = c.post("/api/v1/uploads", headers=bearer(key), data=multipart(img, metadata="[1, 2]"))
    assert bad.status_code == 422 and bad.get_json()["code"] == "invalid_request"
    huge = c.post("/api/v1/uploads", headers=bearer(key), data=multipart(img, metadata=json.dumps({"x": "y" * 5000})))
    assert huge.status_code == 422
    none = c.post("/api/v1/uploads", headers=bearer(key), data={"x": "1"})
    assert none.status_code == 400 and none.get_json()["code"] == "missing_file"


def test_idempotency_key_same_body_same_upload_different_body_422(api_app):
    key = make_key(api_app)
    c = api_app.test_client()
    img = jpeg_bytes(no_face_image())
    h = {**bearer(key), "Idempotency-Key": "order-1"}
    first = c.post("/api/v1/uploads", headers=h, data=multipart(img, external_id="e1"))
    again = c.post("/api/v1/uploads", headers=h, data=multipart(img, external_id="e1"))
    assert first.status_code == again.status_code == 202
    assert first.get_json()["id"] == again.get_json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert count_uploads(api_app) == 1 and queued_jobs(api_app) == 1
    other = c.post("/api/v1/uploads", headers=h, data=multipart(png_bytes(no_face_image()), external_id="e1"))
    assert other.status_code == 422 and other.get_json()["code"] == "idempotency_key_reused"
    other_meta = c.post("/api/v1/uploads", headers=h, data=multipart(img, external_id="e2"))
    assert other_meta.status_code == 422
    # the key is per client: another platform may use the same key
    k2 = make_key(api_app, "p2")
    r = c.post("/api/v1/uploads", headers={**bearer(k2), "Idempotency-Key": "order-1"}, data=multipart(img))
    assert r.status_code == 202 and r.get_json()["id"] != first.get_json()["id"]
    assert count_uploads(api_app) == 2


def test_parallel_duplicates_make_one_row_and_one_job(api_app, live_server):
    key = make_key(api_app)
    img = jpeg_bytes(no_face_image())
    results: list[tuple[int, str]] = []
    barrier = threading.Barrier(8)

    def send():
        barrier.wait()
        r = requests.post(f"{live_server}/api/v1/uploads", files={"file": ("a.jpg", img)},
                          headers={**bearer(key), "Idempotency-Key": "same-everywhere"}, timeout=60)
        results.append((r.status_code, r.json().get("id")))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert len(results) == 8 and {s for s, _ in results} == {202}, results
    assert len({i for _, i in results}) == 1
    assert count_uploads(api_app) == 1 and queued_jobs(api_app) == 1


def test_batch_accepts_each_file_and_reports_errors_per_item(api_app):
    key = make_key(api_app)
    c = api_app.test_client()
    import io

    files = [(io.BytesIO(jpeg_bytes(no_face_image())), "a.jpg"), (io.BytesIO(b"not media"), "b.jpg"),
             (io.BytesIO(png_bytes(no_face_image())), "c.png")]
    r = c.post("/api/v1/uploads:batch", headers=bearer(key),
               data={"file": files, "items": json.dumps([{"external_id": "a"}, {}, {"external_id": "c"}])})
    assert r.status_code == 202, r.get_json()
    items = r.get_json()["items"]
    assert [i["index"] for i in items] == [0, 1, 2]
    assert items[0]["id"] and items[2]["id"] and items[1]["error"]["code"] == "unsupported_type"
    assert count_uploads(api_app) == 2
    ext = c.get("/api/v1/uploads?external_id=c", headers=bearer(key)).get_json()["items"]
    assert ext[0]["id"] == items[2]["id"]


def test_wait_long_polls_until_terminal_or_timeout(api_app, api_settings):
    from workers.context import configure
    from workers.jobs import mark_failed

    key = make_key(api_app, show_score=False)
    c = api_app.test_client()
    uid = c.post("/api/v1/uploads", headers=bearer(key), data=multipart(jpeg_bytes(no_face_image()))).get_json()["id"]
    t0 = time.monotonic()
    r = c.get(f"/api/v1/uploads/{uid}?wait=0.6", headers=bearer(key))
    assert r.get_json()["status"] == "queued" and time.monotonic() - t0 >= 0.5

    def fail_it():  # the worker's fail-closed path: the job gave up for good
        time.sleep(0.5)
        mark_failed(configure(api_settings), uid, "RuntimeError: boom", actor="worker:test")

    t = threading.Thread(target=fail_it)
    t.start()
    body = c.get(f"/api/v1/uploads/{uid}?wait=20", headers=bearer(key)).get_json()
    t.join(30)
    assert body["terminal"] is True and body["status"] == "in_review", body
    assert body["decision"] == "review" and body["review"]["reason"] == "analysis_failed"
    assert body["score"] is None
    assert c.get(f"/api/v1/uploads/{uid}?wait=99", headers=bearer(key)).status_code == 400


def test_withdraw_removes_the_blob_keeps_the_record(api_app):
    key = make_key(api_app)
    c = api_app.test_client()
    img = jpeg_bytes(no_face_image())
    a = c.post("/api/v1/uploads", headers=bearer(key), data=multipart(img)).get_json()["id"]
    b = c.post("/api/v1/uploads", headers=bearer(key), data=multipart(img)).get_json()["id"]
    storage = api_app.extensions["verity.storage"]
    sha = c.get(f"/api/v1/uploads/{a}", headers=bearer(key)).get_json()["sha256"]
    r = c.delete(f"/api/v1/uploads/{a}", headers=bearer(key))
    assert r.status_code == 200 and r.get_json()["status"] == "withdrawn" and r.get_json()["decision"] is None
    assert storage.exists(sha)  # upload b still has these bytes
    assert c.delete(f"/api/v1/uploads/{b}", headers=bearer(key)).status_code == 200
    assert not storage.exists(sha)
    assert c.delete(f"/api/v1/uploads/{b}", headers=bearer(key)).status_code == 200  # idempotent
    got = c.get(f"/api/v1/uploads/{a}", headers=bearer(key)).get_json()
    assert got["status"] == "withdrawn" and got["sha256"] == sha
    assert c.delete("/api/v1/uploads/0123456789abcdef0123456789abcdef", headers=bearer(key)).status_code == 404



def test_nul_characters_are_refused_before_the_database(api_app):
    """PostgreSQL refuses NUL in text; schemathesis found a 500 from a NUL in a query parameter."""
    key = make_key(api_app)
    c = api_app.test_client()
    for url in ("/api/v1/uploads?external_id=a%00b", "/api/v1/webhooks/deliveries?upload_id=%00",
                "/api/v1/webhooks/deliveries/ab%00cd", "/api/v1/uploads/%00"):
        r = c.get(url, headers=bearer(key))
        assert r.status_code == 400, (url, r.status_code, r.get_data(as_text=True))
        assert r.get_json()["code"] == "bad_request"
    r = c.get("/api/v1/webhooks/deliveries?state=sent", headers=bearer(key))
    assert r.status_code == 400 and "pending" in r.get_json()["message"]
    img = jpeg_bytes(no_face_image())
    for fields in ({"external_id": "x\x00y"}, {"metadata": json.dumps({"k": "a\x00"})}):
        r = c.post("/api/v1/uploads", headers=bearer(key), data=multipart(img, **fields))
        assert r.status_code == 422 and r.get_json()["code"] == "invalid_request", r.get_data(as_text=True)
    assert count_uploads(api_app) == 0
