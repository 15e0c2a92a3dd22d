"""The upload page in a real headless Chromium against a real `verity up` (Redis, SQLite,
gunicorn, a worker): pick a photo, watch the progress, see the outcome; drop a bad file, see
it refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mediagen import REPO, face_image, jpeg_bytes

from cli.embedded_redis import free_port

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "tests" / "artifacts"
TERMINAL = {"cleared", "in_review", "blocked", "confirmed_fake", "authentic", "inconclusive"}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} missing (Debian package chromium)"),
]


@pytest.fixture(scope="module")
def live_server(tmp_path_factory, shared_detector):
    """`verity up` on a free port in a temp data dir; stopped with SIGINT after the module."""
    data_dir = tmp_path_factory.mktemp("var")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "VERITY_DATA_DIR")}
    env["VERITY_DEVICE"] = "cpu"
    proc = subprocess.Popen([sys.executable, "-m", "cli", "up", "--data-dir", str(data_dir), "--port",
                             str(port), "--workers", "1"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None:
            pytest.fail("verity up exited early:\n" + proc.stdout.read()[-3000:])
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("verity up did not become ready in 120 s")
    yield base
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        yield b
        b.close()


def test_pick_a_photo_see_progress_and_the_outcome(live_server, browser, tmp_path):
    photo = tmp_path / "portrait.jpg"
    photo.write_bytes(jpeg_bytes(face_image((1280, 720), 500)))
    page = browser.new_page()
    page.goto(live_server + "/")
    assert page.locator("#dropzone").is_visible()
    page.set_input_files("#file-input", str(photo))
    page.wait_for_function(
        "s => s.includes(document.querySelector('#outcome').dataset.status)",
        arg=list(TERMINAL), timeout=90_000)
    status = page.locator("#outcome").get_attribute("data-status")
    assert status in TERMINAL
    assert page.locator("#progress").evaluate("p => p.value") == 100
    text = page.locator("#outcome").inner_text()
    assert text.strip(), "the outcome is shown to the uploader"
    # a result card: the verdict in plain words, then the label, reasons and model (and the
    # score: `verity up` shows it by default)
    assert page.locator("#outcome .verdict-title").inner_text() and page.locator("#outcome .verdict-text").inner_text()
    for fact in ("Label", "Score", "Reasons", "Model"):
        assert fact in page.locator("#outcome dl.verdict-facts").inner_text(), fact
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "upload-page-outcome.png"), full_page=True)
    page.close()


def test_dropped_file_of_the_wrong_type_is_refused(live_server, browser):
    page = browser.new_page()
    page.goto(live_server + "/")
    page.evaluate("""() => {
        const dt = new DataTransfer();
        dt.items.add(new File(['<html><script>alert(1)</script></html>'], 'cat.jpg', {type: 'image/jpeg'}));
        const zone = document.querySelector('#dropzone');
        for (const type of ['dragenter', 'dragover', 'drop']) {
            zone.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));
        }
    }""")
    page.wait_for_function("document.querySelector('#outcome').dataset.status === 'rejected'", timeout=30_000)
    said = page.locator("#status").inner_text()  # one sentence in plain words, not the bare code
    assert said == "This type of file is not accepted: send JPEG, PNG, WebP, GIF, MP4, MOV, WebM and MKV.", said
    assert page.locator("#outcome").inner_text() == ""  # said once, and never as "unsupported_type"
    page.close()
