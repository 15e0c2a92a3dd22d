"""Backends that cannot be reached: a database outage is a 503 with Retry-After ("try again"),
never a 500; a Redis outage loses nothing because the row is the record."""

from __future__ import annotations

import io

from mediagen import face_image, jpeg_bytes


def test_database_down_is_503_with_retry_after(settings):
    from app import create_app

    down = settings.with_(database_url="postgresql+psycopg://postgres@127.0.0.1:1/verity")
    app = create_app({"VERITY": down, "TESTING": True})
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = "Bearer vk_whatever"
    resp = client.post("/api/v1/uploads", data={"file": (io.BytesIO(b"x"), "a.jpg")})
    assert resp.status_code == 503, resp.get_json()
    body = resp.get_json()
    assert body["code"] == "unavailable" and body["request_id"]
    assert int(resp.headers["Retry-After"]) > 0


def test_redis_down_still_accepts_into_the_record(settings, authorize):
    """The database is the record, Redis only a queue: with Redis unreachable the upload is
    accepted and kept `queued`; the reconciler enqueues it once Redis is back."""
    from app import create_app
    from core.models import Upload

    down = settings.with_(redis_url="redis://127.0.0.1:1/0")
    app = create_app({"VERITY": down, "TESTING": True})
    client = app.test_client()
    authorize(app, client)
    photo = jpeg_bytes(face_image((320, 240), 160))
    resp = client.post("/api/v1/uploads", data={"file": (io.BytesIO(photo), "a.jpg")})
    assert resp.status_code == 202, resp.get_json()
    with app.extensions["verity.db"].session() as s:
        row = s.get(Upload, resp.get_json()["id"])
        assert row is not None and row.status == "queued"


def test_a_worker_loop_that_rq_quit_on_a_lost_redis_starts_again(redis_conn, monkeypatch):
    """RQ catches an error in a step of its loop itself ("found an unhandled exception,
    quitting") and returns from work() as if done. A Redis that goes away between two dequeues
    does exactly that; the process must build a new worker, not end (the chaos test
    `test_a_lone_worker_outlives_a_redis_restart` sees it only when the timing falls so)."""
    import signal

    import redis
    from rq import Queue, Worker

    from workers import context

    monkeypatch.setattr(context, "REDIS_RECONNECT_SECONDS", (0,))
    built = []

    class RedisGoesAway(Worker):
        def check_for_suspension(self, burst):
            raise redis.exceptions.ConnectionError("Error 111 connecting to Redis. Connection refused.")

    class StopsWhenAsked(Worker):
        def check_for_suspension(self, burst):
            self.request_stop(signal.SIGTERM, None)  # as the signal handler does: an idle stop

    def make_worker():
        cls = RedisGoesAway if not built else StopsWhenAsked
        built.append(cls(Queue("outage-test", connection=redis_conn), connection=redis_conn))
        return built[-1]

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}  # RQ installs its own
    try:
        context.work_with_reconnect(make_worker, with_scheduler=False)
        assert [type(w) for w in built] == [RedisGoesAway, StopsWhenAsked]
        # and a run asked to stop after N jobs still ends where RQ ends it
        built.clear()
        context.work_with_reconnect(make_worker, with_scheduler=False, max_jobs=5)
        assert [type(w) for w in built] == [RedisGoesAway]
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
