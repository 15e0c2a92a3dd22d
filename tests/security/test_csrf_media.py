"""CSRF on every cookie-authenticated POST (the page, the login form, every review POST), and
stored media served only to moderators, with headers that stop a browser from running it."""

from __future__ import annotations

import io

from mediagen import jpeg_bytes, no_face_image
from securitykit import add_user, csrf_token, login


def _cookie_posts(app):
    """Every POST rule outside the API (the API is Bearer-only and exempt): must demand a token."""
    from test_access import concrete

    return [(r.endpoint, concrete(r)) for r in app.url_map.iter_rules()
            if "POST" in r.methods and not r.endpoint.startswith(("api_v1.", "rq_dashboard."))]


def test_the_page_upload_needs_its_csrf_token(make_app):
    app = make_app(csrf=True)
    c = app.test_client()
    data = jpeg_bytes(no_face_image((64, 48)))
    r = c.post("/upload", data={"file": (io.BytesIO(data), "x.jpg")}, content_type="multipart/form-data")
    assert r.status_code == 400, r.status_code
    token = csrf_token(c.get("/").get_data(as_text=True))
    assert token, "the page carries no CSRF token"
    r = c.post("/upload", data={"file": (io.BytesIO(data), "x.jpg"), "csrf_token": token},
               content_type="multipart/form-data")
    assert r.status_code == 202, r.get_json()
    other = app.test_client()  # a token from another session is refused
    r = other.post("/upload", data={"file": (io.BytesIO(data), "x.jpg"), "csrf_token": token},
                   content_type="multipart/form-data")
    assert r.status_code == 400


def test_login_form_needs_its_token(make_app):
    app = make_app(csrf=True)
    add_user(app, "mod", "moderator")
    r = app.test_client().post("/auth/login", data={"username": "mod", "password": "x"})
    assert r.status_code == 400


def test_every_review_post_is_refused_without_a_token(make_app):
    app = make_app(csrf=True)
    add_user(app, "boss", "admin")
    c = login(app, "boss")
    posts = _cookie_posts(app)
    assert any(e.startswith("review.") for e, _ in posts)
    for endpoint, url in posts:
        r = c.post(url, data={"note": "x", "outcome": "authentic"})
        assert r.status_code == 400, (endpoint, url, r.status_code)
        r = c.post(url, data={"csrf_token": "forged"})
        assert r.status_code == 400, (endpoint, url, r.status_code)
    # the session survived: with its real token, a POST gets through to the view
    token = csrf_token(c.get("/review/").get_data(as_text=True))
    assert token
    r = c.post("/review/next", data={"csrf_token": token})
    assert r.status_code in (200, 302), r.status_code


def test_session_cookie_flags(make_app):
    app = make_app(csrf=True, VERITY_COOKIE_SECURE=None)
    assert app.config["SESSION_COOKIE_SECURE"] is True  # default: Secure
    assert app.config["SESSION_COOKIE_HTTPONLY"] is True
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Lax"


def test_media_only_for_moderators_and_never_runnable(make_app, authorize):
    app = make_app(csrf=False)
    add_user(app, "mod", "moderator")
    api = app.test_client()
    authorize(app, api)
    html_tail = jpeg_bytes(no_face_image((64, 48))) + b"<html><script>alert(document.cookie)</script>"
    r = api.post("/api/v1/uploads", data={"file": (io.BytesIO(html_tail), "x.html")},
                 content_type="multipart/form-data")
    assert r.status_code == 202
    uid = r.get_json()["id"]
    url = f"/review/media/{uid}"
    assert api.get(url).status_code == 302            # an API key is not a moderator
    anon = app.test_client().get(url)
    assert anon.status_code == 302 and "/auth/login" in anon.headers["Location"]
    r = login(app, "mod").get(url)
    assert r.status_code == 200
    h = r.headers
    assert h["Content-Type"] == "image/jpeg"
    assert h["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in h["Content-Security-Policy"] and "default-src 'none'" in h["Content-Security-Policy"]
    assert "no-store" in h["Cache-Control"] and "private" in h["Cache-Control"]
    assert ".html" not in h["Content-Disposition"] and uid in h["Content-Disposition"]
    print(f"\nmedia headers: { {k: h[k] for k in ('Content-Type', 'Content-Disposition', 'Content-Security-Policy', 'X-Content-Type-Options', 'Cache-Control')} }")


def test_every_response_has_nosniff(make_app):
    app = make_app(csrf=True)
    c = app.test_client()
    for url in ("/", "/healthz", "/auth/login", "/api/v1/me", "/review/", "/nope"):
        assert c.get(url).headers.get("X-Content-Type-Options") == "nosniff", url
