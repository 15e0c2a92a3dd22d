"""A platform endpoint that hangs, resets the connection and answers 500 before it accepts: every
event is still delivered (at least once, same event id, valid signature), analysis is not held
up by it, and the ledger balances. Real processes: gunicorn, a detector worker, the webhook
worker; the bad endpoint is a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from chaoslib import REPORT, distinct_faces, wait_for
from test_faults import Stream

BEHAVIOUR = ("hang", "reset", "500", "ok")
"""What the endpoint does on the 1st, 2nd, 3rd and later attempts of each event."""


class BadEndpoint:
    def __init__(self, hang_s: float):
        self.seen: dict[str, int] = defaultdict(int)
        self.log: list[tuple[str, str, dict, bytes]] = []
        self.lock = threading.Lock()
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                eid = self.headers.get("Verity-Event-Id", "?")
                with outer.lock:
                    outer.seen[eid] += 1
                    what = BEHAVIOUR[min(outer.seen[eid], len(BEHAVIOUR)) - 1]
                    outer.log.append((eid, what, dict(self.headers.items()), body))
                if what == "hang":
                    time.sleep(hang_s)  # longer than the sender's timeout
                    return
                if what == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    return
                self.send_response(500 if what == "500" else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hook"

    def close(self):
        self.server.shutdown()
        self.thread.join(5)


@pytest.fixture
def bad_endpoint():
    ep = BadEndpoint(hang_s=3.0)
    yield ep
    ep.close()


def test_hanging_resetting_failing_webhook_endpoint(service_factory, bad_endpoint):
    from sqlalchemy import select

    from core.models import ApiClient, WebhookDelivery
    from core.webhooks.signing import signature

    svc = service_factory(workers=1, extra_env={
        "VERITY_WEBHOOK_TIMEOUT": "1", "VERITY_WEBHOOK_RETRY_INTERVALS": "0,0,0,0,0",
        "VERITY_WEBHOOK_ALLOW_PRIVATE": "true"})
    svc.start_redis()
    svc.start_web()
    svc.start_workers()
    svc.start_webhooks()
    key = svc.create_key("hooked", webhook_url="https://platform.example/hook")
    with svc.session() as s:
        client = s.scalar(select(ApiClient).where(ApiClient.name == "hooked"))
        client.webhook_url = bad_endpoint.url
        secret = client.webhook_secret
        s.commit()
    with Stream(svc, key, distinct_faces(8), rate=2.0) as stream:
        pass
    t0 = time.monotonic()
    svc.wait_settled(90)
    analysis_s = time.monotonic() - t0

    def all_delivered():
        with svc.session() as s:
            states = Counter(d.state for d in s.scalars(select(WebhookDelivery)))
        return states if states and set(states) == {"delivered"} and sum(states.values()) >= len(stream.accepted) \
            else None
    try:
        wait_for(all_delivered, 120, "every webhook to be delivered", 0.5)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{svc.diagnose()}\n--- webhooks ---\n{svc.tail('webhooks')}") from None
    with svc.session() as s:
        deliveries = s.scalars(select(WebhookDelivery)).all()
    per_upload = Counter((d.upload_id, d.event) for d in deliveries)
    assert all(n == 1 for n in per_upload.values()), per_upload  # one outbox row per event
    assert {u for u, _ in per_upload} == set(stream.accepted)
    assert all(d.attempts >= 4 for d in deliveries), [(d.id, d.attempts) for d in deliveries]
    ok = [(eid, h, body) for eid, what, h, body in bad_endpoint.log if what == "ok"]
    assert {eid for eid, _, _ in ok} == {d.id for d in deliveries}
    for eid, h, body in ok:
        assert h["Verity-Signature"] == signature(secret, h["Verity-Timestamp"], eid, h["Verity-Event"], body), eid
    ledger = svc.ledger(stream.accepted)
    behaviours = Counter(what for _, what, _, _ in bad_endpoint.log)
    ledger.check("webhook-endpoint-faults", deliveries=len(deliveries), endpoint_requests=dict(behaviours),
                 analysis_settle_s=round(analysis_s, 1))
    assert REPORT


def test_the_webhook_worker_outlives_a_redis_restart(service_factory):
    from rq import Worker

    svc = service_factory(workers=1)
    svc.start_redis()
    svc.start_webhooks()

    def registered():
        try:
            return any("webhooks" in w.queue_names() for w in Worker.all(connection=svc.redis()))
        except Exception:  # noqa: BLE001 - Redis still coming back
            return False
    wait_for(registered, 60, "the webhook worker to register")
    svc.kill("redis")
    time.sleep(2.0)
    svc.start_redis()
    time.sleep(3.0)
    assert svc.procs["webhooks"].poll() is None, svc.tail("webhooks", 1500)
    wait_for(registered, 30, "the webhook worker to register again")
