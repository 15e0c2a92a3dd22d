"""Signed webhooks: outbox written after the status change, delivered on the `webhooks` queue by
its own worker (never inline), retried against a real receiver that fails the first attempts,
every attempt recorded; survives a Redis wipe; redeliver; the outbound guard."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from apihelpers import bearer, make_key, multipart
from mediagen import jpeg_bytes, no_face_image
from rq import Queue
from rq.registry import ScheduledJobRegistry
from sqlalchemy import select

from core.models import ApiClient, WebhookDelivery
from core.webhooks import guard
from core.webhooks.signing import signature, verify


def run_webhook_worker(settings):
    from workers.context import configure
    from workers.webhooks import WebhookWorker

    WebhookWorker(context=configure(settings)).work(burst=True, with_scheduler=False, logging_level="WARNING")


def submit(app, key) -> str:
    r = app.test_client().post("/api/v1/uploads", headers=bearer(key), data=multipart(jpeg_bytes(no_face_image())))
    assert r.status_code == 202, r.get_json()
    return r.get_json()["id"]


def fail_analysis(settings, uid):
    """The worker's fail-closed path (a job that gave up for good): in_review + notify."""
    from workers.context import configure
    from workers.jobs import mark_failed

    assert mark_failed(configure(settings), uid, "RuntimeError: boom", actor="worker:test")


def deliveries(app, uid=None) -> list[WebhookDelivery]:
    with app.extensions["verity.db"].session() as s:
        q = select(WebhookDelivery).order_by(WebhookDelivery.created_at)
        if uid:
            q = q.where(WebhookDelivery.upload_id == uid)
        rows = s.scalars(q).all()
        for d in rows:
            _ = d.attempt_log
        return rows


def secret_of(app, name="platform") -> str:
    with app.extensions["verity.db"].session() as s:
        return s.scalar(select(ApiClient.webhook_secret).where(ApiClient.name == name))


def test_failed_analysis_webhook_is_retried_signed_and_logged(api_app, api_settings, receiver):
    receiver.fail_first = 2
    key = make_key(api_app, webhook_url=receiver.url, show_score=True)
    uid = submit(api_app, key)
    fail_analysis(api_settings, uid)

    # nothing was sent inline by the analysis side; the job waits on its own queue
    assert receiver.requests == []
    [d] = deliveries(api_app, uid)
    assert d.event == "upload.failed" and d.state == "pending"
    conn = api_app.extensions["verity.redis"]
    assert Queue(api_settings.webhook_queue, connection=conn).count == 1
    assert Queue(api_settings.queue_name, connection=conn).count == 1  # only the analysis job there

    run_webhook_worker(api_settings)
    assert len(receiver.requests) == 3
    [d] = deliveries(api_app, uid)
    assert d.state == "delivered" and d.attempts == 3 and d.last_status_code == 204
    assert [a.status_code for a in d.attempt_log] == [500, 500, 204]
    assert [a.error for a in d.attempt_log] == ["HTTP 500", "HTTP 500", None]
    assert all(a.latency_ms >= 0 for a in d.attempt_log)

    secret = secret_of(api_app)
    for req in receiver.requests:
        h = req["headers"]
        assert h["Verity-Event-Id"] == d.id and h["Verity-Event"] == "upload.failed"
        assert verify(secret, h, req["body"])
        assert h["Verity-Signature"] == signature(secret, h["Verity-Timestamp"], d.id, "upload.failed", req["body"])
    body = json.loads(receiver.requests[-1]["body"])
    got = api_app.test_client().get(f"/api/v1/uploads/{uid}", headers=bearer(key)).get_json()
    assert body == got and body["decision"] == "review" and body["review"]["reason"] == "analysis_failed"

    # the delivery log, as the platform sees it
    c = api_app.test_client()
    log = c.get("/api/v1/webhooks/deliveries", headers=bearer(key)).get_json()["items"]
    assert [x["id"] for x in log] == [d.id] and log[0]["state"] == "delivered"
    one = c.get(f"/api/v1/webhooks/deliveries/{d.id}", headers=bearer(key)).get_json()
    assert [a["status_code"] for a in one["attempt_log"]] == [500, 500, 204]
    other = make_key(api_app, "other")
    assert c.get(f"/api/v1/webhooks/deliveries/{d.id}", headers=bearer(other)).status_code == 404

    # redeliver: the same event id again
    r = c.post(f"/api/v1/webhooks/deliveries/{d.id}/redeliver", headers=bearer(key))
    assert r.status_code == 202 and r.get_json()["state"] == "pending"
    run_webhook_worker(api_settings)
    assert len(receiver.requests) == 4 and receiver.requests[-1]["headers"]["Verity-Event-Id"] == d.id
    [d] = deliveries(api_app, uid)
    assert d.state == "delivered" and len(d.attempt_log) == 4


def test_decided_event_and_no_webhook_without_url(api_app, api_settings, receiver):
    from core.models import Status, Upload
    from core.webhooks.outbox import Outbox

    key = make_key(api_app, webhook_url=receiver.url)
    quiet = make_key(api_app, "quiet")
    uid, other = submit(api_app, key), submit(api_app, quiet)
    outbox = Outbox(api_settings, api_app.extensions["verity.db"].engine, api_app.extensions["verity.redis"])
    with api_app.extensions["verity.db"].session() as s:
        for i in (uid, other):
            up = s.get(Upload, i)
            up.status = Status.CONFIRMED_FAKE  # as a moderator's decision leaves it
            s.commit()
            outbox.on_status_change(up, up.status)  # what the lifecycle tells its listeners
    [d] = deliveries(api_app)
    assert d.upload_id == uid and d.event == "upload.decided"
    run_webhook_worker(api_settings)
    body = json.loads(receiver.requests[0]["body"])
    assert body["decision"] == "block" and body["status"] == "confirmed_fake" and body["score"] is None


def test_deliveries_survive_a_redis_wipe(api_app, api_settings, receiver):
    from core.webhooks.outbox import reconcile_deliveries

    key = make_key(api_app, webhook_url=receiver.url)
    uid = submit(api_app, key)
    fail_analysis(api_settings, uid)
    conn = api_app.extensions["verity.redis"]
    conn.flushdb()  # Redis restarted without its data: the queue forgot the job
    run_webhook_worker(api_settings)
    assert receiver.requests == []
    ids = reconcile_deliveries(api_settings, api_app.extensions["verity.db"].engine, conn, stuck_after=0)
    assert len(ids) == 1
    assert reconcile_deliveries(api_settings, api_app.extensions["verity.db"].engine, conn, stuck_after=0) == []
    run_webhook_worker(api_settings)
    assert len(receiver.requests) == 1
    assert deliveries(api_app, uid)[0].state == "delivered"


def test_backoff_schedules_the_next_attempt_later(api_app, api_settings, receiver):
    receiver.fail_first = 100
    s = api_settings.with_(webhook_retry_intervals=(30, 120, 600, 3600))
    key = make_key(api_app, webhook_url=receiver.url)
    uid = submit(api_app, key)
    fail_analysis(s, uid)
    run_webhook_worker(s)
    [d] = deliveries(api_app, uid)
    assert d.state == "pending" and d.attempts == 1 and d.last_status_code == 500
    delay = (d.next_attempt_at.replace(tzinfo=None) - d.attempt_log[0].created_at.replace(tzinfo=None)).total_seconds()
    assert 29 <= delay <= 31
    reg = ScheduledJobRegistry(s.webhook_queue, connection=api_app.extensions["verity.redis"])
    assert reg.get_job_ids() == [f"webhook-{d.id}"]


def test_a_dead_endpoint_ends_failed_after_the_last_retry(api_app, api_settings):
    key = make_key(api_app, webhook_url="http://127.0.0.1:1/nothing-listens")
    uid = submit(api_app, key)
    fail_analysis(api_settings, uid)
    run_webhook_worker(api_settings)
    [d] = deliveries(api_app, uid)
    assert d.state == "failed" and d.attempts == 4 and d.last_status_code is None
    assert "ConnectionRefusedError" in d.last_error


def test_signature_verification():
    from core.webhooks.signing import signed_headers

    body = b'{"id":"x"}'
    h = signed_headers("whsec_test", "ev1", "upload.analyzed", body, now=1700000000)
    assert h["Verity-Signature"] == signature("whsec_test", 1700000000, "ev1", "upload.analyzed", body)
    assert verify("whsec_test", h, body, now=1700000010)
    assert not verify("whsec_test", h, body + b" ", now=1700000010)
    assert not verify("whsec_other", h, body, now=1700000010)
    assert not verify("whsec_test", h, body, now=1700009999)  # replay window
    assert not verify("whsec_test", {**h, "Verity-Timestamp": "nope"}, body)


def test_a_captured_delivery_replayed_under_a_new_event_id_or_type_fails():
    """The signature covers the event id and type (v2): a delivery replayed within the time
    tolerance with another Verity-Event-Id (which a receiver deduplicates on) or another
    Verity-Event no longer verifies. Under v1 (timestamp and body only) both passed."""
    from core.webhooks.signing import signed_headers

    body = b'{"id":"x","status":"blocked"}'
    h = signed_headers("whsec_test", "ev1", "upload.decided", body, now=1700000000)
    assert verify("whsec_test", h, body, now=1700000001)
    assert not verify("whsec_test", {**h, "Verity-Event-Id": "ev2"}, body, now=1700000001)
    assert not verify("whsec_test", {**h, "Verity-Event": "upload.analyzed"}, body, now=1700000001)
    assert h["Verity-Signature"].startswith("v2=") and "v1=" not in h["Verity-Signature"]


@pytest.mark.parametrize("url", ["http://127.0.0.1/x", "http://localhost/x", "http://10.1.2.3/",
                                 "http://169.254.169.254/latest/meta-data", "http://[::1]/",
                                 "http://192.168.0.1/", "http://0.0.0.0/", "http://[::ffff:127.0.0.1]/"])
def test_guard_refuses_private_targets(url):
    with pytest.raises(guard.OutboundRefused):
        guard.resolve(url, allow_private=False)
    guard.resolve(url, allow_private=True)


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "gopher://x/", "http://u:p@127.0.0.1/",
                                 "http:///nohost"])
def test_guard_refuses_other_schemes_and_credentials(url):
    with pytest.raises(guard.OutboundRefused):
        guard.resolve(url, allow_private=True)


def test_guard_checks_every_redirect_hop():
    hits = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            hits.append(self.path)
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(307)
            target = "/final" if self.path == "/start" else "http://169.254.169.254/steal" \
                if self.path == "/evil" else "/loop"
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    base = f"http://127.0.0.1:{srv.server_port}"
    try:
        with pytest.raises(guard.OutboundRefused, match="redirects"):
            guard.post(base + "/loop", b"{}", {}, timeout=2, allow_private=True)
        # a hop to the metadata address is checked on its own: refused when private targets are not allowed
        with pytest.raises(guard.OutboundRefused):
            guard.post("http://169.254.169.254/x", b"{}", {}, timeout=2, allow_private=False)
    finally:
        srv.shutdown()
        t.join(5)
