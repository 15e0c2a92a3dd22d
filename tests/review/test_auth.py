"""Accounts, roles, CSRF, cookies, the login rate limit and `verity user add`."""

from __future__ import annotations

from click.testing import CliRunner
from sqlalchemy import select

from tests.review.kit import PASSWORD, Browser, csrf_from, make_item


def test_pages_need_a_login(app, users):
    c = app.test_client()
    item = make_item(app)
    for url in ("/review/", f"/review/items/{item}", "/review/dashboard", "/admin/rq/"):
        r = c.get(url)
        assert r.status_code == 302 and "/auth/login" in r.headers["Location"], url
    from core.models import ReviewItem, Upload

    with app.extensions["verity.db"].session() as s:
        upload_id = s.get(ReviewItem, item).upload_id
        assert s.get(Upload, upload_id) is not None
    r = c.get(f"/review/media/{upload_id}")
    assert r.status_code == 302 and not r.data.startswith(b"\xff\xd8")


def test_login_wrong_password_then_right(app, users):
    b = Browser(app)
    r = b.login("mod", "not the password")
    assert r.status_code == 401 and "Wrong username or password" in r.get_data(as_text=True)
    r = b.login("nobody", PASSWORD)
    assert r.status_code == 401
    r = b.login("mod")
    assert r.status_code == 302 and r.headers["Location"].endswith("/review/")
    assert b.get("/review/").status_code == 200
    from core.models import AuditEvent

    with app.extensions["verity.db"].session() as s:
        actions = [e.action for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))]
    assert actions.count("auth.login_failed") == 2 and "auth.login" in actions


def test_passwords_use_a_slow_salted_kdf(app, users):
    from core.models import User

    with app.extensions["verity.db"].session() as s:
        hashes = [u.password_hash for u in s.scalars(select(User))]
    assert all(h.startswith("scrypt:") for h in hashes)
    assert len(set(hashes)) == len(hashes) or len(hashes) == 3  # (the fixture reuses one hash)
    assert PASSWORD not in "".join(hashes)


def test_logout_ends_the_session(browser):
    b = browser("mod")
    assert b.get("/review/").status_code == 200
    assert b.post("/auth/logout").status_code == 302
    assert b.get("/review/").status_code == 302


def test_no_open_redirect_after_login(app, users):
    b = Browser(app)
    b.token = csrf_from(b.get("/auth/login").get_data(as_text=True))
    r = b.post("/auth/login", {"username": "mod", "password": PASSWORD, "next": "//evil.example/x"})
    assert r.status_code == 302 and r.headers["Location"].endswith("/review/")


def test_roles_admin_pages(browser):
    mod, admin = browser("mod"), browser("admin")
    for url in ("/review/dashboard", "/review/audit", "/review/audit.csv", "/review/audit.json",
                "/review/admin/settings", "/admin/rq/"):
        assert mod.get(url).status_code == 403, url
        assert admin.get(url).status_code == 200, url
    assert mod.post("/review/admin/settings", {"review_threshold": "0.1"}).status_code == 403
    # a job id that Redis no longer has is a 404 in rq-dashboard, for the page and its JSON
    for url in ("/admin/rq/0/view/job/no-such-job", "/admin/rq/0/data/job/no-such-job.json",
                "/admin/rq/99/view/job/no-such-job"):
        assert admin.get(url).status_code == 404, url
        assert mod.get(url).status_code == 403, url


def test_csrf_is_enforced_on_every_state_change(app, browser):
    item = make_item(app)
    b = browser("mod")
    assert b.post(f"/review/items/{item}/claim", {"csrf_token": ""}).status_code == 400
    assert b.post(f"/review/items/{item}/claim", {"csrf_token": "forged"}).status_code == 400
    assert b.post("/review/next", {"csrf_token": ""}).status_code == 400
    assert b.post("/auth/logout", {"csrf_token": ""}).status_code == 400
    anon = app.test_client()
    assert anon.post("/auth/login", data={"username": "mod", "password": PASSWORD}).status_code == 400
    # ... and the real token works
    assert b.post(f"/review/items/{item}/claim").status_code == 302


def test_api_stays_csrf_exempt(app, browser):
    # A POST to the JSON API without any CSRF token is judged on its own terms, not refused for CSRF.
    r = app.test_client().post("/api/v1/uploads", data={})
    assert r.status_code != 400 or "CSRF" not in r.get_data(as_text=True)


def test_session_cookie_flags_in_production_config(settings, users):
    from app import create_app

    app = create_app({"VERITY": settings, "TESTING": True})  # default: Secure cookies
    try:
        b = Browser(app)
        page = b.client.get("/auth/login", base_url="https://localhost")
        token = csrf_from(page.get_data(as_text=True))
        r = b.client.post("/auth/login", data={"username": "mod", "password": PASSWORD, "csrf_token": token},
                          base_url="https://localhost", headers={"Referer": "https://localhost/auth/login"})
        assert r.status_code == 302, r.get_data(as_text=True)
        cookie = [h for h in r.headers.getlist("Set-Cookie") if h.startswith("verity_session=")][-1]
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    finally:
        app.extensions["verity.db"].dispose()


def test_login_is_rate_limited(app, users):
    b = Browser(app)
    b.token = csrf_from(b.get("/auth/login").get_data(as_text=True))
    codes = [b.post("/auth/login", {"username": "mod", "password": "wrong"}).status_code for _ in range(11)]
    assert codes[:10] == [401] * 10
    assert codes[10] == 429
    # the limit holds for the right password too, until the window passes
    assert b.post("/auth/login", {"username": "mod", "password": PASSWORD}).status_code == 429


def test_changing_the_password_ends_sessions(app, browser):
    b = browser("mod")
    from core.models import User

    with app.extensions["verity.db"].session() as s:
        u = s.scalar(select(User).where(User.username == "mod"))
        u.set_password("another long password")
        s.commit()
    assert b.get("/review/").status_code == 302


def test_cli_user_add(app, settings, monkeypatch):
    from cli import main

    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    runner = CliRunner()
    r = runner.invoke(main, ["user", "add", "alice", "--role", "admin", "--password-stdin",
                             "--data-dir", str(settings.data_dir)], input="a long passphrase\n")
    assert r.exit_code == 0, r.output
    assert "created admin alice" in r.output
    r = runner.invoke(main, ["user", "add", "alice", "--password-stdin", "--data-dir", str(settings.data_dir)],
                      input="a long passphrase\n")
    assert r.exit_code != 0 and "exists already" in r.output
    r = runner.invoke(main, ["user", "add", "bob", "--password-stdin", "--data-dir", str(settings.data_dir)],
                      input="short\n")
    assert r.exit_code != 0 and "at least" in r.output
    r = runner.invoke(main, ["user", "add", "carol", "--role", "moderator", "--data-dir", str(settings.data_dir)],
                      input="prompted passphrase\nprompted passphrase\n")
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["user", "list", "--data-dir", str(settings.data_dir)])
    assert "alice\tadmin" in r.output and "carol\tmoderator" in r.output
    b = Browser(app)
    assert b.login("alice", "a long passphrase").status_code == 302
    assert b.get("/review/dashboard").status_code == 200
