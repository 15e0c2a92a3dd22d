"""Per-key rate limits (Flask-Limiter on the real Redis) and analysis-queue back-pressure."""

from __future__ import annotations

from apihelpers import bearer, make_key, multipart
from mediagen import jpeg_bytes, no_face_image


def test_rate_limit_is_per_key_with_retry_after(api_app):
    slow = make_key(api_app, "slow", rate_limit="3/minute")
    fast = make_key(api_app, "fast")
    c = api_app.test_client()
    assert [c.get("/api/v1/me", headers=bearer(slow)).status_code for _ in range(3)] == [200, 200, 200]
    r = c.get("/api/v1/me", headers=bearer(slow))
    assert r.status_code == 429
    body = r.get_json()
    assert body["code"] == "rate_limited" and body["request_id"]
    assert 0 < int(r.headers["Retry-After"]) <= 60
    # another key is not affected, and health/readiness/metrics are never limited
    assert c.get("/api/v1/me", headers=bearer(fast)).status_code == 200
    for _ in range(5):
        assert c.get("/healthz").status_code == 200
        assert c.get("/metrics").status_code == 200


def test_backpressure_503_when_the_queue_is_full(api_settings):
    from app import create_app

    app = create_app({"VERITY": api_settings.with_(api_max_queue_depth=2), "TESTING": True})
    key = make_key(app)
    c = app.test_client()
    img = jpeg_bytes(no_face_image((320, 240)))
    codes = [c.post("/api/v1/uploads", headers=bearer(key), data=multipart(img)).status_code for _ in range(2)]
    assert codes == [202, 202]
    r = c.post("/api/v1/uploads", headers=bearer(key), data=multipart(img))
    assert r.status_code == 503 and r.get_json()["code"] == "overloaded"
    assert int(r.headers["Retry-After"]) > 0
    # reads still work while submits are refused
    assert c.get("/api/v1/uploads", headers=bearer(key)).status_code == 200
    app.extensions["verity.db"].dispose()
