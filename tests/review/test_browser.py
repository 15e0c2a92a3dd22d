"""End to end in a real headless Chromium (Playwright): sign in, open the queue, claim with the
keyboard, reveal, decide with the keyboard, see the item leave the queue. Screenshots of the
queue and the evidence view go to tests/artifacts/."""

from __future__ import annotations

import shutil
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from mediagen import face_image, jpeg_bytes, no_face_image, write_video

from tests.review.kit import PASSWORD, make_item

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def live_server(app):
    from werkzeug.serving import make_server

    srv = make_server("127.0.0.1", 0, app, threaded=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://localhost:{srv.server_port}"
    srv.shutdown()


@pytest.fixture(scope="module")
def chromium():
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def _analysed(detector, tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    r = detector.analyze_path(path)
    d = r.to_dict()
    return {"media": d["media"], "frames": d["frames"]}, r


@pytest.fixture
def seeded(app, users, tmp_path, shared_detector):
    """A queue that looks like a working day: real detector evidence on real face photos."""
    face = jpeg_bytes(face_image((960, 640), face_height=420, index=0))
    ev, r = _analysed(shared_detector, tmp_path, "face.jpg", face)
    top = make_item(app, data=face, evidence=ev, score=r.score, label=str(r.label), reasons=list(r.reasons),
                    timings=r.timings_ms, model_version=r.model_version, status="blocked", reason="blocked",
                    priority=30, width=960, height=640)
    video = write_video(tmp_path / "clip.mp4", face_image((640, 360), face_height=250, index=1), seconds=2.0, fps=12)
    vev, vr = _analysed(shared_detector, tmp_path, "clip.mp4", video.read_bytes())
    vid = make_item(app, data=video.read_bytes(), kind="video", evidence=vev, score=vr.score, label=str(vr.label),
                    reasons=list(vr.reasons), timings=vr.timings_ms, model_version=vr.model_version,
                    width=640, height=360)
    others = [make_item(app, score=s, age=timedelta(hours=h), due_in=timedelta(hours=24),
                        data=jpeg_bytes(no_face_image((400 + i, 300))))
              for i, (s, h) in enumerate([(0.58, 3), (0.66, 30), (0.52, 1)])]
    make_item(app, score=None, label="unreadable", reason="unreadable", priority=20,
              data=jpeg_bytes(no_face_image((500, 300))))
    return {"top": top, "video": vid, "others": others}


def _login(page, base, name="mod"):
    page.goto(base + "/review/")
    assert "/auth/login" in page.url
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/review/")


def test_moderator_flow_with_the_keyboard(chromium, live_server, seeded):
    ARTIFACTS.mkdir(exist_ok=True)
    ctx = chromium.new_context(viewport={"width": 1440, "height": 900})
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    _login(page, live_server)
    rows = page.locator("#queue-table tbody tr")
    assert rows.count() == 6
    assert rows.first.get_attribute("data-item") == str(seeded["others"][1])  # overdue rises to the top
    page.screenshot(path=str(ARTIFACTS / "review-queue.png"), full_page=True)

    # n: claim the top unclaimed item (the overdue one); release it with n again -> the block
    page.keyboard.press("n")
    page.wait_for_url(f"**/review/items/{seeded['others'][1]}")
    page.keyboard.press("n")
    page.wait_for_url(f"**/review/items/{seeded['top']}")
    assert "Claimed by you" in page.inner_text("#claimline")
    viewer = page.locator("#viewer")
    assert "blurred" in viewer.get_attribute("class")
    page.wait_for_function("document.querySelectorAll('#boxes rect').length > 0")
    page.wait_for_function("Array.from(document.querySelectorAll('#crops img')).every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=str(ARTIFACTS / "review-evidence-blurred.png"), full_page=True)
    crop_filter = "getComputedStyle(document.querySelector('#crops img')).filter"
    media_filter = "getComputedStyle(document.getElementById('media')).filter"
    assert "blur" in page.evaluate(crop_filter) and "blur" in page.evaluate(media_filter)
    page.keyboard.press("r")
    assert "blurred" not in viewer.get_attribute("class")
    assert page.evaluate(crop_filter) == "none" and page.evaluate(media_filter) == "none"
    page.screenshot(path=str(ARTIFACTS / "review-evidence.png"), full_page=True)

    page.keyboard.press("?")
    assert page.locator("#help").is_visible()
    page.keyboard.press("Escape")
    assert not page.locator("#help").is_visible()

    # typing a note does not trigger shortcuts; f decides and opens the next item
    page.click("#note")
    page.keyboard.type("face swap, seam at the jaw")
    assert page.url.endswith(f"/review/items/{seeded['top']}")
    page.keyboard.press("Escape")
    page.keyboard.press("f")
    page.wait_for_url(lambda u: not u.endswith(f"/items/{seeded['top']}"))
    page.goto(live_server + "/review/")
    ids = [r.get_attribute("data-item") for r in page.locator("#queue-table tbody tr").all()]
    assert str(seeded["top"]) not in ids
    page.goto(live_server + "/review/?state=decided")
    assert page.locator(f'tr[data-item="{seeded["top"]}"]').count() == 1
    assert not errors, errors
    ctx.close()


def test_video_evidence_timeline_seeks(chromium, live_server, seeded):
    ctx = chromium.new_context(viewport={"width": 1440, "height": 900})
    page = ctx.new_page()
    _login(page, live_server, "mod2")
    page.goto(live_server + f"/review/items/{seeded['video']}")
    page.click("#claim-btn")
    page.wait_for_url(f"**/review/items/{seeded['video']}")
    page.keyboard.press("r")
    page.wait_for_function("document.getElementById('media').readyState >= 1")
    ticks = page.locator("#timeline .tick")
    assert ticks.count() >= 8
    t = float(ticks.nth(5).get_attribute("data-t"))
    ticks.nth(5).click()
    page.wait_for_function(f"Math.abs(document.getElementById('media').currentTime - {t}) < 0.05")
    page.locator("#crops .crop").first.click()
    page.wait_for_timeout(300)
    page.screenshot(path=str(ARTIFACTS / "review-evidence-video.png"), full_page=True)
    # a: authentic, and the item leaves the queue
    page.locator("#then-next").uncheck()
    page.keyboard.press("a")
    page.wait_for_url("**/review/?decided=*")
    assert page.locator(f'tr[data-item="{seeded["video"]}"]').count() == 0
    assert "Decision recorded" in page.inner_text("main")
    ctx.close()


def test_admin_pages_render(chromium, live_server, seeded):
    ARTIFACTS.mkdir(exist_ok=True)
    ctx = chromium.new_context(viewport={"width": 1440, "height": 900})
    page = ctx.new_page()
    _login(page, live_server, "admin")
    page.goto(live_server + "/review/dashboard")
    assert page.locator("#m-waiting").inner_text() == "6"
    page.screenshot(path=str(ARTIFACTS / "review-dashboard.png"), full_page=True)
    page.goto(live_server + "/admin/rq/")
    assert page.locator("body").inner_text()  # the RQ dashboard, behind the admin login
    ctx.close()


def test_admin_keys_pages(chromium, live_server, app, users):
    """Create a key in the form (shown once, with a copy button), open its delivery log and expand
    an attempt log, and revoke it through the confirm dialog (dismissed first: nothing happens)."""
    from core.models import WebhookAttempt, WebhookDelivery

    ARTIFACTS.mkdir(exist_ok=True)
    ctx = chromium.new_context(viewport={"width": 1440, "height": 900})
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    _login(page, live_server, "admin")
    page.click("text=Keys")
    page.wait_for_url("**/review/admin/keys")
    page.fill("#k-name", "acme")
    page.fill("#k-hook", "https://93.184.215.14/hooks/verity")
    page.fill("#k-rate", "100/minute")
    page.check("#k-score")
    page.click("#new-key-form button[type=submit]")
    page.wait_for_selector("#new-key-value")
    key = page.inner_text("#new-key-value")
    assert key.startswith("vk_")
    page.click('[data-copy="new-key-value"]')
    page.screenshot(path=str(ARTIFACTS / "admin-keys-created.png"), full_page=True)

    with app.extensions["verity.db"].session() as s:
        from core.models import ApiClient

        client_id = s.query(ApiClient.id).filter_by(name="acme").scalar()
        d = WebhookDelivery(client_id=client_id, upload_id="f" * 32, event="upload.analyzed", payload="{}",
                            state="failed", attempts=2, last_status_code=503, last_error="HTTP 503")
        s.add(d)
        s.flush()
        s.add_all([WebhookAttempt(delivery_id=d.id, url="https://93.184.215.14/hooks/verity", status_code=503,
                                  latency_ms=87.0, error="HTTP 503") for _ in range(2)])
        s.commit()
    page.goto(live_server + "/review/admin/keys")
    assert key not in page.content()
    page.click("text=acme")
    page.wait_for_url(f"**/review/admin/keys/{client_id}")
    page.click("#deliveries details summary")
    assert page.locator("#deliveries table.attempts tbody tr").count() == 2
    page.screenshot(path=str(ARTIFACTS / "admin-key.png"), full_page=True)

    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#revoke-btn")
    assert page.locator("#key-settings").count() == 1  # dismissed: still active
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#revoke-btn")
    page.wait_for_url("**?revoked=1")
    assert page.locator("#revoked-chip").count() == 1
    assert not errors, errors
    ctx.close()
