"""No secret in logs, JSON (never pickle) in Redis, and pinned runtime dependencies."""

from __future__ import annotations

import io
import json
import logging
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from mediagen import jpeg_bytes, no_face_image
from securitykit import PASSWORD, add_user, login

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def receiver():
    got = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append((dict(self.headers.items()), self.rfile.read(int(self.headers.get("Content-Length", 0)))))
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_port}/hook", got
    srv.shutdown()
    t.join(5)


def test_no_secret_reaches_the_logs_or_the_audit_trail(make_app, settings, caplog, receiver):
    """Capture every log record (DEBUG, all loggers) while keys are created and used (right and
    wrong), a moderator signs in (right and wrong password) and a webhook is signed and sent;
    then grep the logs, the audit events and the delivery log for the secret values."""
    from sqlalchemy import select

    from core.clients import create_client
    from core.models import AuditEvent, Upload, WebhookAttempt, WebhookDelivery
    from core.webhooks.delivery import deliver_with
    from core.webhooks.outbox import Outbox

    url, got = receiver
    caplog.set_level(logging.DEBUG)
    app = make_app(csrf=False)
    add_user(app, "mod", "moderator")
    with app.extensions["verity.db"].session() as s:
        new = create_client(s, "hooked", webhook_url="https://hooks.example.com/verity")
        key, secret = new.key, new.client.webhook_secret
        new.client.webhook_url = url  # the outbound guard is told below that loopback is allowed
        s.commit()
    c = app.test_client()
    r = c.post("/api/v1/uploads", data={"file": (io.BytesIO(jpeg_bytes(no_face_image((64, 48)))), "x.jpg")},
               headers={"Authorization": f"Bearer {key}"}, content_type="multipart/form-data")
    assert r.status_code == 202
    uid = r.get_json()["id"]
    c.get(f"/api/v1/uploads/{uid}", headers={"Authorization": f"Bearer {key}"})
    c.get("/api/v1/me", headers={"Authorization": f"Bearer {key[:-1]}X"})  # a near miss
    c.get("/api/v1/me", headers={"Authorization": f"Bearer {key}"})
    login(app, "mod")
    app.test_client().post("/auth/login", data={"username": "mod", "password": PASSWORD + "-wrong"})
    outbox = Outbox(settings, app.extensions["verity.db"].engine, app.extensions["verity.redis"])
    with app.extensions["verity.db"].session() as s:
        up = s.get(Upload, uid)
        up.status = "cleared"
        s.commit()
        outbox.on_status_change(up, "cleared")  # what the worker's lifecycle tells it after a verdict
        delivery = s.scalar(select(WebhookDelivery).where(WebhookDelivery.upload_id == uid))
    assert delivery is not None
    out = deliver_with(settings.with_(webhook_allow_private=True), app.extensions["verity.db"].engine, delivery.id)
    assert got, out
    headers, _ = got[0]
    assert headers["Verity-Signature"].startswith("v2=")
    with app.extensions["verity.db"].session() as s:
        trail = json.dumps([[e.actor, e.action, e.detail] for e in s.scalars(select(AuditEvent))], default=str)
        trail += json.dumps([[a.url, a.error] for a in s.scalars(select(WebhookAttempt))])
        trail += json.dumps([[d.payload, d.last_error] for d in s.scalars(select(WebhookDelivery))])
    logs = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    print(f"\ncaptured {len(caplog.records)} log records, {len(trail)} characters of audit/delivery trail")
    for name, value in {"api key": key, "api key body": key[len("vk_"):], "webhook secret": secret,
                        "password": PASSWORD}.items():
        assert value not in logs, f"the {name} is in the logs"
        assert value not in trail, f"the {name} is in the audit or delivery trail"


def test_rq_jobs_in_redis_are_json_never_pickle(make_app, authorize, redis_conn, settings):
    from rq import Queue

    app = make_app(csrf=False)
    c = app.test_client()
    authorize(app, c)
    r = c.post("/api/v1/uploads", data={"file": (io.BytesIO(jpeg_bytes(no_face_image((64, 48)))), "x.jpg")},
               content_type="multipart/form-data")
    uid = r.get_json()["id"]
    raw = redis_conn.hgetall(f"rq:job:{uid}")
    assert raw, "no job hash in Redis"
    for field in (b"data", b"meta"):
        if field in raw:
            assert not raw[field].startswith(b"\x80"), f"{field} is a pickle"
    data = raw[b"data"]
    try:
        payload = json.loads(data)
    except ValueError:
        import zlib

        payload = json.loads(zlib.decompress(data))
    assert payload[0] == "workers.jobs.analyze_upload" and uid in json.dumps(payload)
    from rq.job import Job

    assert Job.fetch(uid, connection=redis_conn, serializer="json").args == [uid]
    assert Queue(settings.queue_name, connection=redis_conn, serializer="json").serializer.__name__ \
        .lower().startswith("json")
    # both workers are ContextWorkers, built with serializer="json" (workers/lease.py)
    from rq.serializers import JSONSerializer

    from workers.context import WorkerContext
    from workers.webhooks import WebhookWorker

    assert WebhookWorker(context=WorkerContext(settings)).serializer is JSONSerializer
    assert 'setdefault("serializer", "json")' in (REPO / "workers/lease.py").read_text()


def _runtime_requirements() -> list[str]:
    doc = tomllib.loads((REPO / "pyproject.toml").read_text())
    proj = doc["project"]
    reqs = list(proj["dependencies"])
    for extra in ("cpu", "gpu"):
        reqs += proj.get("optional-dependencies", {}).get(extra, [])
    return reqs


def test_runtime_dependencies_are_pinned():
    """Every runtime requirement (base, cpu, gpu) is `==` or has an upper bound (a deliberate range)."""
    from packaging.requirements import Requirement

    loose = []
    for line in _runtime_requirements():
        req = Requirement(line)
        if req.name == "verity":
            continue
        ops = {s.operator for s in req.specifier}
        if not ({"==", "===", "~="} & ops or "<" in ops or "<=" in ops):
            loose.append(line)
    print(f"\n{len(_runtime_requirements())} runtime requirements checked")
    assert not loose, f"unpinned runtime dependencies: {loose}"
