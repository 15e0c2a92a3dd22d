"""The upload page's states in a real headless Chromium, against the app served from this process
(the round trip through a worker is tests/test_upload_page_browser.py): the idle page has the
review UI's look and links out; each kind of result card says in plain words what the verdict
means; each refusal is one human sentence, never the bare code; the visitor the operator's
VERITY_PAGE_ACCESS refuses; the visitor with a platform's page token. Screenshots of each state
go to tests/artifacts/upload-page-*.png."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest
from mediagen import REPO, jpeg_bytes, no_face_image

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "tests" / "artifacts"
IDS = ("upload-form", "dropzone", "file-input", "progress", "status", "outcome")
RAW_CODES = ("too_large", "unsupported_type", "unreadable", "rate_limited", "forbidden", "bad_request")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} missing (Debian package chromium)"),
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield b
        b.close()


@pytest.fixture
def serve(settings):
    """serve(**settings changes) -> (app, base URL): the real app (CSRF on) on a free port."""
    from werkzeug.serving import make_server

    from app import create_app

    running = []

    def start(**changes):
        app = create_app({"VERITY": settings.with_(**changes), "TESTING": True, "VERITY_COOKIE_SECURE": False})
        srv = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        running.append((srv, app))
        return app, f"http://127.0.0.1:{srv.server_port}"

    yield start
    for srv, app in running:
        srv.shutdown()
        app.extensions["verity.db"].dispose()


def _open(browser, url):
    """A page at `url`, and the problems it met: script errors and any answer >= 400 but the page's own."""
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    problems = []
    page.on("pageerror", lambda e: problems.append(f"script error: {e}"))
    page.on("response", lambda r: r.status >= 400 and r.url != url and problems.append(f"{r.status} {r.url}"))
    page.goto(url)
    return page, problems


def _shot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def _file(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_the_idle_page_looks_like_verity_and_links_out(serve, browser):
    _, base = serve()
    page, problems = _open(browser, base + "/")
    for i in IDS:
        assert page.locator(f"#{i}").count() == 1, i
    assert page.locator("#status").get_attribute("role") == "status"
    assert page.locator("#status").get_attribute("aria-live") == "polite"
    # the review UI's bar, brand, stylesheet and type
    assert page.inner_text(".topbar .brand").strip() == "Verity"
    assert "/review/static/review.css" in page.get_attribute("link[rel=stylesheet]", "href")
    assert page.evaluate("getComputedStyle(document.querySelector('.topbar')).backgroundColor") == "rgb(27, 33, 48)"
    # where a moderator and a platform go from here, and both answer
    assert page.get_attribute("#sign-in-link", "href") == "/auth/login"
    assert page.get_attribute("#api-link", "href") == "/api/v1/openapi.json"
    assert page.request.get(base + "/auth/login").status == 200
    assert page.request.get(base + "/api/v1/openapi.json").json()["openapi"]
    # the limit and the types are said before anything is dropped
    assert re.search(r"JPEG, PNG, WebP, GIF, MP4, MOV, WebM or MKV\s+· up to 200 MB", page.inner_text("#dropzone"))
    icons = page.eval_on_selector_all("link[rel=icon]", "ls => ls.map(l => l.href)")
    assert base + "/favicon.ico" in icons and base + "/static/favicon.svg" in icons
    for href in icons:
        r = page.request.get(href)
        assert r.status == 200 and r.headers["content-type"].startswith("image/"), (href, r.status)
    page.locator("#dropzone").focus()
    _shot(page, "upload-page-idle.png")
    page.set_viewport_size({"width": 390, "height": 800})  # a phone: nothing runs off the side
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    _shot(page, "upload-page-idle-phone.png")
    assert not problems, problems
    page.close()


CARDS = [  # status, label: what the card must say in plain words
    ("cleared", "likely_authentic", "Cleared", "No sign of a manipulated face"),
    ("in_review", "suspected_fake", "Sent to a human moderator", "a moderator will look at it"),
    ("blocked", "suspected_fake", "Blocked", "so the file was blocked"),
    ("confirmed_fake", "suspected_fake", "Confirmed fake", "confirmed that a face in it is manipulated"),
    ("authentic", "suspected_fake", "Judged authentic", "judged it authentic"),
    ("inconclusive", "suspected_fake", "Inconclusive", "could not decide"),
    ("cleared", "no_face", "No face found", "so nothing was checked"),
    ("in_review", "unreadable", "Could not be read", "could not be decoded, so nothing was checked"),
]


def _status_body(status, label, score):
    from app.page import outcome

    title, text = outcome(status, label)
    analysis = {"label": label, "reasons": [f"reason for {label}"], "model": {"name": "verity-sbi", "version": "3.0.0"},
                "provider": "CPUExecutionProvider", "reused": False, "faces": 0 if score is None else 1}
    if score is not None:
        analysis["score"] = score
    return {"id": "u1", "status": status, "terminal": True, "label": label, "analysis": analysis,
            "outcome_title": title, "outcome": text}


def _fake_server(page, bodies):
    """POST /upload answers 202 with a status link; that link answers `bodies` in turn (the last
    one for good). Returns the URLs the page polled."""
    polled = []
    link = "/uploads/u1/status?cap=Zm9v-exactly-this"

    def upload(route):
        route.fulfill(status=202, content_type="application/json",
                      body=json.dumps({"id": "u1", "status": "queued", "links": {"status": link}}))

    def status(route):
        polled.append(route.request.url)
        body = bodies[min(len(polled) - 1, len(bodies) - 1)]
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    page.route("**/upload", upload)
    page.route("**/uploads/u1/status*", status)
    return polled, link


@pytest.mark.parametrize("show_score", [True, False])
def test_each_result_card_says_what_the_verdict_means(serve, browser, tmp_path, show_score):
    _, base = serve(show_score=show_score)
    page, problems = _open(browser, base + "/")
    photo = _file(tmp_path, "holiday.jpg", jpeg_bytes(no_face_image((120, 90))))
    for status, label, title, words in CARDS:
        score = None if label in ("no_face", "unreadable") else 0.912
        waiting = {"id": "u1", "status": "analyzing", "terminal": False, "outcome": "Analysing", "analysis": None}
        polled, link = _fake_server(page, [waiting, _status_body(status, label, score)])
        page.set_input_files("#file-input", photo)
        page.wait_for_selector(f'#outcome[data-status="{status}"]', timeout=10_000)
        assert all(u == base + link for u in polled) and len(polled) >= 2, polled  # exactly the link given
        card = page.locator("#outcome")
        assert card.locator(".verdict-title").inner_text() == title
        assert words in card.locator(".verdict-text").inner_text()
        facts = card.locator("dl.verdict-facts").inner_text()
        assert label.replace("_", " ") in facts and f"reason for {label}" in facts and "verity-sbi 3.0.0" in facts
        assert ("0.912" in facts) == (show_score and score is not None), facts
        assert "File: holiday.jpg" in card.inner_text()
        said = page.inner_text("#status")  # announced to screen readers, the card shows it
        assert title in said and page.get_attribute("#status", "data-tone") == "done"
        if show_score or label == "unreadable":
            _shot(page, f"upload-page-result-{status}-{label}{'' if show_score else '-no-score'}.png")
        page.unroute("**/upload")
        page.unroute("**/uploads/u1/status*")
    assert not problems, problems
    page.close()


def test_each_refusal_is_one_plain_sentence(serve, browser, tmp_path):
    """Real refusals from the server (415, 422, 429) and from the page itself (too large: never
    sent); then the ones this test cannot provoke cheaply, answered by a stand-in (413, 403, a
    stale CSRF token, anything else)."""
    _, base = serve(page_rate_limit="3/minute", max_upload_bytes=300_000)
    page, problems = _open(browser, base + "/")
    html = _file(tmp_path, "cat.jpg", b"<html><script>alert(1)</script></html>")
    truncated = _file(tmp_path, "cut.jpg", jpeg_bytes(no_face_image((640, 480)))[:1500])
    big = _file(tmp_path, "big.jpg", b"\xff\xd8\xff" + b"\0" * 400_000)

    def refused(path):
        with page.expect_response("**/upload") as r:
            page.set_input_files("#file-input", path)
        page.wait_for_selector('#outcome[data-status="rejected"]', state="attached")
        return r.value.status, page.inner_text("#status")

    def check(text):
        assert page.get_attribute("#status", "data-tone") == "error"
        assert page.inner_text("#outcome") == ""  # the sentence is said once
        for code in RAW_CODES:
            assert code not in text, text
        assert "Rejected:" not in text and "Not accepted (" not in text

    types = "This type of file is not accepted: send JPEG, PNG, WebP, GIF, MP4, MOV, WebM and MKV."
    assert refused(html) == (415, types)
    check(page.inner_text("#status"))
    _shot(page, "upload-page-rejected.png")
    status, text = refused(truncated)
    assert status == 422 and text.startswith("The file could not be read: ") and text.endswith("."), text
    check(text)

    sent = []
    page.on("request", lambda r: r.url.endswith("/upload") and sent.append(r.url))
    page.set_input_files("#file-input", big)
    page.wait_for_selector('#outcome[data-status="rejected"]', state="attached")
    assert page.inner_text("#status") == "This file is too large: the limit is 293 KB." and not sent
    check(page.inner_text("#status"))
    _shot(page, "upload-page-rejected-too-large.png")

    assert refused(html)[0] == 415  # the third upload of this address this minute
    assert refused(html) == (429, "Too many uploads from this address: try again later.")
    check(page.inner_text("#status"))

    stand_ins = [
        (413, {"code": "too_large", "message": "upload larger than the limit of 300000 bytes"},
         "This file is too large: the limit is 293 KB."),
        (403, {"code": "forbidden", "message": "this upload page needs a sign-in or a platform's page token"},
         "This page is closed to uploads without a sign-in or a link from your platform."),
        (400, {"code": "bad_request", "message": "The CSRF token has expired."},
         "This page has expired: reload it and try again."),
        (503, {"code": "unavailable", "message": "a backing service is unavailable; nothing was stored, retry shortly"},
         "A backing service is unavailable; nothing was stored, retry shortly."),
    ]
    def answer(code, body):
        return lambda route: route.fulfill(status=code, content_type="application/json",
                                           body=json.dumps({**body, "request_id": "r1"}))

    for code, body, sentence in stand_ins:
        page.route("**/upload", answer(code, body))
        page.set_input_files("#file-input", _file(tmp_path, "ok.jpg", jpeg_bytes(no_face_image((90, 60)))))
        page.wait_for_function("s => document.querySelector('#status').textContent === s", arg=sentence,
                               timeout=10_000)
        check(sentence)
        page.unroute("**/upload")
    assert not [p for p in problems if "/upload" not in p], problems
    page.close()


@pytest.mark.parametrize("access", ["users", "token"])
def test_a_refused_visitor_is_told_why(serve, browser, access):
    _, base = serve(page_access=access)
    page, problems = _open(browser, base + "/")
    refusal = page.locator("#refused")
    assert refusal.is_visible() and refusal.get_attribute("role") == "alert"
    assert page.locator("#dropzone").count() == 0 and page.locator("#upload-form").count() == 0
    assert page.inner_text(".topbar .brand").strip() == "Verity"
    if access == "users":
        assert "needs signing in" in refusal.inner_text()
        assert refusal.locator("a", has_text="Sign in").get_attribute("href") == "/auth/login?next=/"
        assert page.locator("#sign-in-link").count() == 1
    else:  # only a platform's users come here: signing in would not help them
        assert "a link from the platform you came from" in refusal.inner_text()
        assert "Sign in" not in page.content()
    _shot(page, f"upload-page-refused-{access}.png")
    assert not problems, problems
    page.close()


def test_a_visitor_with_a_page_token_uploads_for_the_platform(serve, browser, tmp_path):
    from app.page.tokens import mint_page_token
    from core.clients import create_client, revoke_client
    from core.models import ApiClient, Upload

    app, base = serve(page_access="token")
    with app.extensions["verity.db"].session() as s:
        create_client(s, "acme")
        client_id = s.query(ApiClient.id).filter_by(name="acme").scalar()
    token, _ = mint_page_token(app.config["VERITY"].secret_key, client_id, "user-7")
    page, problems = _open(browser, f"{base}/?token={token}")
    assert page.get_attribute("input[type=hidden][name=token]", "value") == token
    assert page.locator("#refused").count() == 0
    photo = _file(tmp_path, "me.jpg", jpeg_bytes(no_face_image((100, 80))))
    with page.expect_response("**/upload") as r:
        page.set_input_files("#file-input", photo)
    assert r.value.status == 202  # in token mode, only with the token (Chromium does not show a file upload's body)
    page.wait_for_function("document.querySelector('#status').textContent.includes('Waiting for a worker')")
    assert page.get_attribute("#status", "data-tone") == "busy"
    _shot(page, "upload-page-token-waiting.png")
    with app.extensions["verity.db"].session() as s:
        row = s.get(Upload, r.value.json()["id"])
        assert row.client_id == client_id and row.metadata_json == {"page_user": "user-7"}
        revoke_client(s, "acme")
    page.reload()  # the revoked platform's token opens nothing now
    assert page.locator("#refused").is_visible()
    assert [p for p in problems if not p.startswith("403 ")] == [], problems
    page.close()
