"""The findings of the door-locking probe (each test failed on main before its fix): sessions that
outlive a sign-out, rq-dashboard actions on GET, sign-in timing that tells which names exist,
deeply nested JSON, and two 500s. The webhook replay finding is in tests/api/test_webhooks.py,
the upload page's in test_upload_page_doors.py, the launcher's in tests/test_launcher.py."""

from __future__ import annotations

import io
import json

from mediagen import jpeg_bytes, no_face_image
from securitykit import PASSWORD, add_user, csrf_token, login


def _copy_cookies(src, dst) -> None:
    for cookie in src._cookies.values():
        dst.set_cookie(cookie.key, cookie.value, domain=cookie.domain, path=cookie.path)


def test_a_cookie_copied_before_sign_out_opens_nothing_after(make_app):
    """Logout raises the account's session generation: a copy of the session cookie taken before
    (a stolen cookie, another browser) no longer opens the review UI."""
    app = make_app(csrf=False)
    add_user(app, "mod", "moderator")
    c = login(app, "mod")
    thief = app.test_client()
    _copy_cookies(c, thief)
    assert thief.get("/review/").status_code == 200  # the copy works while the session lives
    assert c.post("/auth/logout").status_code == 302
    assert c.get("/review/").status_code == 302
    r = thief.get("/review/")
    assert r.status_code == 302 and "/auth/login" in r.headers["Location"]
    assert login(app, "mod").get("/review/").status_code == 200  # signing in again works


def test_disabling_an_account_or_changing_its_password_ends_its_sessions(make_app, settings):
    from click.testing import CliRunner

    from cli import main

    app = make_app(csrf=False)
    add_user(app, "mod", "moderator")
    env = {"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url}
    c = login(app, "mod")
    r = CliRunner().invoke(main, ["user", "password", "mod", "--password-stdin", "--data-dir",
                                  str(settings.data_dir)], input="another-long-password\n", env=env)
    assert r.exit_code == 0, r.output
    assert c.get("/review/").status_code == 302
    c = app.test_client()
    c.post("/auth/login", data={"username": "mod", "password": "another-long-password"})
    assert c.get("/review/").status_code == 200
    r = CliRunner().invoke(main, ["user", "disable", "mod", "--data-dir", str(settings.data_dir)], env=env)
    assert r.exit_code == 0, r.output
    assert c.get("/review/").status_code == 302
    assert c.post("/auth/login", data={"username": "mod", "password": "another-long-password"}).status_code == 401


def test_rq_dashboard_actions_refuse_get_and_head(make_app, redis_conn):
    """/admin/rq/requeue/<queue> answered GET (and HEAD): a cross-site top-level link re-ran every
    failed job with the admin's SameSite=Lax cookie. Actions now take POST from the same origin."""
    from rq import Queue

    app = make_app(csrf=False)
    add_user(app, "admin", "admin")
    admin = login(app, "admin")
    q = Queue("verity-analyze", connection=redis_conn, serializer="json")
    job = q.enqueue("workers.jobs.analyze_upload", "x" * 32, job_id="a" * 32)
    q.failed_job_registry.add(job, ttl=600, exc_string="boom")
    for method in (admin.get, admin.head):
        r = method("/admin/rq/requeue/verity-analyze", headers={"Referer": "https://evil.example/"})
        assert r.status_code == 405, (method, r.status_code)
    assert q.failed_job_registry.count == 1  # nothing was re-run
    cross = admin.post("/admin/rq/requeue/verity-analyze", headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403
    same = admin.post("/admin/rq/requeue/verity-analyze", headers={"Origin": "http://localhost"})
    assert same.status_code == 200 and same.get_json()["count"] == 1


def test_rq_dashboard_compact_of_an_empty_queue_is_not_a_500(make_app, redis_conn):
    app = make_app(csrf=False)
    add_user(app, "admin", "admin")
    admin = login(app, "admin")
    for queue in ("verity-analyze", "no-such-queue"):
        r = admin.post(f"/admin/rq/queue/{queue}/compact", headers={"Origin": "http://localhost"})
        assert r.status_code < 500, (queue, r.status_code, r.get_data(as_text=True)[:300])


def test_an_unknown_name_costs_a_password_check_like_a_known_one(make_app, monkeypatch):
    """Unknown names answered in 6-7 ms, known ones in ~100 ms (scrypt): a name list could be
    read off the timing. Now a dummy hash is checked for an unknown name: one scrypt check each."""
    import werkzeug.security

    from core.models import accounts

    app = make_app(csrf=False)
    add_user(app, "mod", "moderator")
    checks = []
    real = werkzeug.security.check_password_hash

    def counting(pwhash, password):
        checks.append(pwhash.split("$")[0])
        return real(pwhash, password)

    monkeypatch.setattr(accounts, "check_password_hash", counting)
    c = app.test_client()
    for name in ("mod", "nobody-by-this-name", ""):
        checks.clear()
        r = c.post("/auth/login", data={"username": name, "password": "wrong-password-here"})
        assert r.status_code == 401
        assert len(checks) == 1 and checks[0].startswith("scrypt"), (name, checks)


def _bearer(app, authorize):
    c = app.test_client()
    authorize(app, c)
    return c


def test_deeply_nested_json_is_a_400_not_a_500(make_app, authorize):
    app = make_app(csrf=False)
    c = _bearer(app, authorize)
    deep = "[" * 100_000 + "]" * 100_000
    photo = jpeg_bytes(no_face_image((64, 48)))
    for metadata in ('{"a":' * 25 + "1" + "}" * 25, '{"a":' + deep + "}", "{" + '"a":{' * 3000 + "}" * 3001):
        r = c.post("/api/v1/uploads", data={"file": (io.BytesIO(photo), "x.jpg"), "metadata": metadata},
                   content_type="multipart/form-data")
        assert r.status_code == 400, (r.status_code, r.get_json())
        assert r.get_json()["code"] == "invalid_request" and "nested" in r.get_json()["message"] \
            or "longer" in r.get_json()["message"]
    r = c.post("/api/v1/uploads:batch", data={"file": (io.BytesIO(photo), "x.jpg"), "items": deep},
               content_type="multipart/form-data")
    assert r.status_code == 400, r.get_json()
    ok = c.post("/api/v1/uploads", data={"file": (io.BytesIO(photo), "x.jpg"),
                                         "metadata": json.dumps({"a": {"b": [1, 2, {"c": "d"}]}})},
                content_type="multipart/form-data")
    assert ok.status_code == 202, ok.get_json()


def test_the_media_of_a_withdrawn_upload_is_gone_not_a_500(make_app, authorize):
    app = make_app(csrf=False)
    api = _bearer(app, authorize)
    r = api.post("/api/v1/uploads", data={"file": (io.BytesIO(jpeg_bytes(no_face_image((64, 48)))), "x.jpg")},
                 content_type="multipart/form-data")
    uid = r.get_json()["id"]
    assert api.delete(f"/api/v1/uploads/{uid}").status_code == 200
    add_user(app, "mod", "moderator")
    m = login(app, "mod")
    r = m.get(f"/review/media/{uid}")
    assert r.status_code == 410 and "withdrew" in r.get_data(as_text=True)


def test_security_kit_is_what_the_tests_above_use():
    assert PASSWORD and csrf_token('<meta name="csrf-token" content="t">') == "t"
