"""The upload page's doors: per-address limits on anonymous floods, who may use the page
(open, signed-in users, a platform's page token), anonymous items behind every platform item in
the queue, truncated anonymous files refused at the door, and a status route that answers only
the browser that uploaded (never for an API upload, never the platform's fields)."""

from __future__ import annotations

import io

import pytest
from mediagen import jpeg_bytes, no_face_image
from securitykit import add_user, login
from sqlalchemy import select


def _page_upload(client, data: bytes, **form):
    return client.post("/upload", data={"file": (io.BytesIO(data), "x.jpg"), **form},
                       content_type="multipart/form-data")


def _photo(i: int = 0) -> bytes:
    return jpeg_bytes(no_face_image((96 + i, 64)))


def test_anonymous_uploads_are_limited_per_address(make_app, settings):
    """60 anonymous uploads in 0.6 s were all accepted; now the page takes VERITY_PAGE_RATE_LIMIT
    per client address (default 10/minute), then answers 429."""
    from app import create_app

    app = create_app({"VERITY": settings.with_(page_rate_limit="10/minute"), "TESTING": True,
                      "WTF_CSRF_ENABLED": False, "VERITY_COOKIE_SECURE": False})
    c = app.test_client()
    codes = [_page_upload(c, _photo(i)).status_code for i in range(12)]
    assert codes[:10] == [202] * 10 and codes[10:] == [429, 429], codes
    r = _page_upload(c, _photo(99))
    assert r.get_json()["code"] == "rate_limited"
    other = app.test_client()  # another address is not held up
    r = other.post("/upload", data={"file": (io.BytesIO(_photo(51)), "x.jpg")}, content_type="multipart/form-data",
                   environ_base={"REMOTE_ADDR": "10.9.8.7"})
    assert r.status_code == 202
    app.extensions["verity.db"].dispose()


def test_behind_a_proxy_the_limit_is_per_visitor(settings):
    """VERITY_PROXY_HOPS=1: the address is the proxy's X-Forwarded-For, not the proxy's own."""
    from app import create_app

    app = create_app({"VERITY": settings.with_(page_rate_limit="2/minute", proxy_hops=1), "TESTING": True,
                      "WTF_CSRF_ENABLED": False, "VERITY_COOKIE_SECURE": False})
    c = app.test_client()

    def via_proxy(visitor: str, i: int) -> int:
        return c.post("/upload", data={"file": (io.BytesIO(_photo(i)), "x.jpg")}, content_type="multipart/form-data",
                      headers={"X-Forwarded-For": visitor}).status_code

    assert [via_proxy("203.0.113.1", i) for i in range(3)] == [202, 202, 429]
    assert via_proxy("203.0.113.2", 9) == 202
    app.extensions["verity.db"].dispose()


def test_page_bytes_per_day_are_limited_per_address(make_app, settings):
    from app import create_app

    size = len(jpeg_bytes(no_face_image((160, 120))))
    app = create_app({"VERITY": settings.with_(page_max_bytes_per_day=int(size * 2.5)), "TESTING": True,
                      "WTF_CSRF_ENABLED": False, "VERITY_COOKIE_SECURE": False})
    c = app.test_client()
    codes = [_page_upload(c, jpeg_bytes(no_face_image((160, 120 + i)))).status_code for i in range(4)]
    assert codes == [202, 202, 429, 429], codes  # the request's length counts, multipart and all
    app.extensions["verity.db"].dispose()


def test_a_truncated_anonymous_file_is_refused_at_the_door(make_app, authorize):
    """Five truncated JPEGs from the page all became `in_review`. An anonymous upload is decoded
    at the door now: unreadable, it is refused (422), never put in front of a moderator. The
    platform's uploads keep the fail-closed path (the worker sends them to review)."""
    app = make_app(csrf=False)
    whole = jpeg_bytes(no_face_image((320, 240)))
    truncated = whole[: len(whole) // 2]
    r = _page_upload(app.test_client(), truncated)
    assert r.status_code == 422 and r.get_json()["code"] == "unreadable", r.get_json()
    api = app.test_client()
    authorize(app, api)
    r = api.post("/api/v1/uploads", data={"file": (io.BytesIO(truncated), "x.jpg")},
                 content_type="multipart/form-data")
    assert r.status_code == 202


def test_anonymous_review_items_wait_behind_every_platform_item(make_app, authorize, settings, run_jobs):
    from app.review import queue
    from core.models import ReviewItem, Upload

    app = make_app(csrf=False)
    admin_settings = {"review_threshold": "0.5", "block_threshold": "0.9", "route_no_face": "in_review",
                      "route_unreadable": "in_review", "review_sla_hours": "24"}
    add_user(app, "admin", "admin")
    from securitykit import csrf_token

    a = login(app, "admin")
    a.post("/review/admin/settings", data={**admin_settings,
                                           "csrf_token": csrf_token(a.get("/review/admin/settings").get_data(True))})
    anon = [_page_upload(app.test_client(), _photo(i)).get_json()["id"] for i in range(3)]
    api = app.test_client()
    authorize(app, api)
    platform = api.post("/api/v1/uploads", data={"file": (io.BytesIO(_photo(40)), "x.jpg")},
                        content_type="multipart/form-data").get_json()["id"]
    run_jobs()
    with app.extensions["verity.db"].session() as s:
        rows = queue.list_items(s, queue.Filters())
        order = [u.id for _, u, _ in rows]
        assert order[0] == platform and set(order[1:]) == set(anon), order
        for uid in anon:
            item = s.scalar(select(ReviewItem).where(ReviewItem.upload_id == uid))
            assert item.due_at is None and item.priority < 0 and s.get(Upload, uid).anonymous


@pytest.mark.parametrize("access", ["users", "token"])
def test_a_closed_page_refuses_anonymous_visitors(make_app, settings, access):
    from app import create_app

    app = create_app({"VERITY": settings.with_(page_access=access), "TESTING": True, "WTF_CSRF_ENABLED": False,
                      "VERITY_COOKIE_SECURE": False, "LOGIN_RATE_LIMIT": "1000/minute"})
    c = app.test_client()
    page = c.get("/")
    assert page.status_code == 403 and b'id="dropzone"' not in page.data
    assert (b"Sign in" in page.data) == (access == "users")
    assert _page_upload(c, _photo()).status_code == 403
    add_user(app, "mod", "moderator")
    signed_in = login(app, "mod")
    r = _page_upload(signed_in, _photo(1))
    assert r.status_code == (202 if access == "users" else 403)
    app.extensions["verity.db"].dispose()


def test_a_platform_hands_its_user_the_page_with_a_token(make_app, settings, authorize):
    """POST /api/v1/page-tokens mints a short-lived token; the page with it uploads for that
    platform (its key, its webhooks), attributed to the user it named; a forged or another
    key's revoked token opens nothing."""
    from app import create_app
    from core.clients import revoke_client
    from core.models import Upload

    app = create_app({"VERITY": settings.with_(page_access="token"), "TESTING": True, "WTF_CSRF_ENABLED": False,
                      "VERITY_COOKIE_SECURE": False})
    api = app.test_client()
    authorize(app, api, name="acme")
    r = api.post("/api/v1/page-tokens", json={"subject": "user-42"})
    assert r.status_code == 201, r.get_json()
    token, url = r.get_json()["token"], r.get_json()["page_url"]
    browser = app.test_client()
    page = browser.get(url)
    assert page.status_code == 200 and token.encode() in page.data and b'id="dropzone"' in page.data
    up = _page_upload(browser, _photo(), token=token)
    assert up.status_code == 202, up.get_json()
    with app.extensions["verity.db"].session() as s:
        row = s.get(Upload, up.get_json()["id"])
        assert row.source == "page" and row.client_id is not None and not row.anonymous
        assert row.metadata_json == {"page_user": "user-42"}
    assert _page_upload(browser, _photo(1), token=token[:-2] + "xx").status_code == 403
    assert api.post("/api/v1/page-tokens", json={"subject": "x" * 300}).status_code == 422
    with app.extensions["verity.db"].session() as s:
        revoke_client(s, "acme")
    assert _page_upload(browser, _photo(2), token=token).status_code == 403
    app.extensions["verity.db"].dispose()


def test_the_status_route_answers_only_the_uploading_browser(make_app, authorize, settings, run_jobs):
    """GET /uploads/<id>/status answered anyone who knew an id, API uploads included, with the
    score, evidence, external_id and metadata. Now it needs the capability in the link the
    upload handed to its browser, shows page uploads only, and honours VERITY_SHOW_SCORE."""
    from app import create_app
    from app.page.tokens import status_capability

    app = create_app({"VERITY": settings.with_(show_score=False), "TESTING": True, "WTF_CSRF_ENABLED": False,
                      "VERITY_COOKIE_SECURE": False})
    browser = app.test_client()
    body = _page_upload(browser, _photo()).get_json()
    link, uid = body["links"]["status"], body["id"]
    run_jobs()
    assert browser.get(f"/uploads/{uid}/status").status_code == 404  # the id alone
    assert browser.get(f"/uploads/{uid}/status?cap=forged").status_code == 404
    got = app.test_client().get(link)  # the link itself works (it is the capability)
    assert got.status_code == 200 and got.get_json()["terminal"]
    data = got.get_json()
    assert "score" not in (data.get("analysis") or {}) and data.get("score") is None
    assert not {"external_id", "metadata", "sha256"} & set(data)
    api = app.test_client()
    authorize(app, api)
    api_id = api.post("/api/v1/uploads", data={"file": (io.BytesIO(_photo(9)), "x.jpg"), "external_id": "secret-ref",
                                               "metadata": '{"user": "alice"}'},
                      content_type="multipart/form-data").get_json()["id"]
    cap = status_capability(settings.secret_key, api_id)  # even a valid capability: never an API upload
    assert browser.get(f"/uploads/{api_id}/status?cap={cap}").status_code == 404
    app.extensions["verity.db"].dispose()
