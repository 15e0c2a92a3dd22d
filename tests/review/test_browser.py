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
    unreadable = make_item(app, score=None, label="unreadable", reason="unreadable", priority=20,
                           data=jpeg_bytes(no_face_image((500, 300))), evidence={"media": {}, "frames": []},
                           reasons=["corrupt_image: the image cannot be decoded"])
    return {"top": top, "video": vid, "others": others, "unreadable": unreadable}


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
    # an item with no score (unreadable) draws no bar: a neutral "no score"
    unreadable = page.locator(f'tr[data-item="{seeded["unreadable"]}"]')
    assert unreadable.locator(".scorebar").count() == 0 and unreadable.locator(".noscore").inner_text() == "no score"
    assert page.locator("#queue-table .scorebar").count() == 5
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


def _tone(png: bytes) -> tuple[float, float]:
    """Mean and spread of a screenshot's lightness (0-255)."""
    import io

    from PIL import Image, ImageStat

    st = ImageStat.Stat(Image.open(io.BytesIO(png)).convert("L"))
    return st.mean[0], st.stddev[0]


def test_blurred_crops_look_blurred_and_a_click_reveals(chromium, live_server, seeded):
    """Blurred face crops were dark squares with no hint: now a crop is visibly a blurred face
    with "hidden: press r or click to reveal" over it, and a click on it reveals the media."""
    ARTIFACTS.mkdir(exist_ok=True)
    ctx = chromium.new_context(viewport={"width": 1440, "height": 900})
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    _login(page, live_server)
    page.goto(live_server + f"/review/items/{seeded['top']}")
    page.wait_for_function("Array.from(document.querySelectorAll('#crops img')).every(i => i.complete && i.naturalWidth > 0)")
    tile = page.locator("#crops .crop .img").first
    veil = tile.locator(".veil")
    assert "blurred" in page.get_attribute("#crops", "class")
    assert veil.is_visible() and veil.inner_text() == "hidden: press r or click to reveal"
    blurred = tile.screenshot()
    page.locator("#crops").screenshot(path=str(ARTIFACTS / "review-crops-blurred.png"))
    page.screenshot(path=str(ARTIFACTS / "review-evidence-blurred.png"), full_page=True)

    page.locator("#crops .crop").first.click()  # a click reveals (it does not seek yet)
    assert "blurred" not in page.get_attribute("#viewer", "class")
    assert "blurred" not in page.get_attribute("#crops", "class") and not veil.is_visible()
    assert page.evaluate("getComputedStyle(document.querySelector('#crops img')).filter") == "none"
    revealed = tile.screenshot()
    page.locator("#crops").screenshot(path=str(ARTIFACTS / "review-crops-revealed.png"))
    (b_mean, b_spread), (r_mean, _) = _tone(blurred), _tone(revealed)
    # a blurred face, not a black square: about as light as the face itself, and not flat
    assert b_mean > 70 and b_mean > 0.6 * r_mean and b_spread > 8, (b_mean, b_spread, r_mean)

    page.keyboard.press("r")  # r blurs again, and clicking the blurred viewer reveals
    assert "blurred" in page.get_attribute("#viewer", "class") and veil.is_visible()
    page.locator("#viewer .reveal").click(position={"x": 30, "y": 30})
    assert "blurred" not in page.get_attribute("#viewer", "class")
    assert not errors, errors
    ctx.close()


def test_an_item_with_no_score_shows_no_score(chromium, live_server, seeded):
    ARTIFACTS.mkdir(exist_ok=True)
    ctx = chromium.new_context(viewport={"width": 1440, "height": 900})
    page = ctx.new_page()
    _login(page, live_server)
    page.goto(live_server + f"/review/items/{seeded['unreadable']}")
    big = page.locator("#analysis-score .score-big")
    assert big.inner_text() == "no score" and "none" in big.get_attribute("class")
    assert page.evaluate("getComputedStyle(document.querySelector('#analysis-score .score-big')).color") \
        == "rgb(123, 131, 148)"  # --ink-3: neutral, not the green of a low score
    assert "could not be read" in page.inner_text("#analysis-score")
    page.screenshot(path=str(ARTIFACTS / "review-item-unreadable.png"), full_page=True)
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
    # one decision in the last 24 h: "Decisions per hour" agrees with it (it said 0.0)
    page.goto(live_server + f"/review/items/{seeded['others'][0]}")
    page.click("#claim-btn")
    page.locator("#then-next").uncheck()
    page.keyboard.press("a")
    page.wait_for_url("**/review/?decided=*")
    page.goto(live_server + "/review/dashboard")
    assert page.locator("#m-waiting").inner_text() == "5"
    assert page.locator("#m-per-hour").inner_text() == "0.042"
    assert page.locator("#m-decisions").inner_text() == "1 decision in the last 24 h (÷ 24)"
    page.screenshot(path=str(ARTIFACTS / "review-dashboard.png"), full_page=True)

    # "Jobs": rq-dashboard's own pages, with Verity's bar on top and a way back
    page.click("text=Jobs")
    page.wait_for_url("**/admin/rq/**")
    page.wait_for_selector("#navbar-dashboard")
    back = page.locator("#verity-back")
    assert back.is_visible() and back.bounding_box()["y"] == 0
    page.screenshot(path=str(ARTIFACTS / "rq-dashboard-back.png"), full_page=True)
    page.click("#verity-back-link")
    page.wait_for_url(live_server + "/review/")
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
