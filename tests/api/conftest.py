"""Fixtures for the platform API: keys, a live server (werkzeug, threaded, 127.0.0.1) and a real
HTTP webhook receiver that fails its first attempts."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from apihelpers import Receiver
from werkzeug.serving import make_server


@pytest.fixture
def api_settings(settings):
    """Test settings plus immediate webhook retries and private targets allowed (the receiver is
    on 127.0.0.1)."""
    return settings.with_(webhook_allow_private=True, webhook_retry_intervals=(0, 0, 0), webhook_timeout=5.0)


@pytest.fixture
def api_app(api_settings):
    from app import create_app

    app = create_app({"VERITY": api_settings, "TESTING": True})
    yield app
    app.extensions["verity.db"].dispose()


@pytest.fixture
def live_server(api_app):
    """The app on a real socket (threaded werkzeug server) for concurrent clients."""
    server = make_server("127.0.0.1", 0, api_app, threaded=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    t.join(5)


@pytest.fixture
def receiver():
    """A real HTTP endpoint on 127.0.0.1 that answers `status` to the first `fail_first` requests,
    then 204; it records every request (headers, raw body)."""
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(n)
            with rec.lock:
                rec.requests.append({"path": self.path, "headers": dict(self.headers.items()), "body": body})
                failing = len(rec.requests) <= rec.fail_first
            self.send_response(rec.status if failing else 204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    rec.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=rec.server.serve_forever, daemon=True)
    t.start()
    yield rec
    rec.server.shutdown()
    t.join(5)
