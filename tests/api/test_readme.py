"""The README's Python client example and signature snippet, run as written against a live
server (werkzeug on 127.0.0.1) with the fail-closed worker path, or the real detector when the
shipped model is there."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

from apihelpers import make_key
from mediagen import jpeg_bytes, no_face_image

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Platform API"):]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


def test_readme_client_example_runs(api_app, api_settings, live_server, tmp_path, capsys):
    from workers.context import configure
    from workers.jobs import mark_failed

    example, snippet, _live = python_blocks()
    key = make_key(api_app, "readme", show_score=True)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg_bytes(no_face_image()))
    code = (example.replace('"http://127.0.0.1:8000/api/v1"', repr(live_server + "/api/v1"))
            .replace('"vk_..."', repr(key)).replace('"photo.jpg"', repr(str(photo))))

    def finish():  # the worker side: without a shipped model, the fail-closed path decides
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with api_app.extensions["verity.db"].session() as s:
                from core.models import Upload

                up = s.query(Upload).filter_by(external_id="post-123").one_or_none()
            if up is not None:
                mark_failed(configure(api_settings), up.id, "no detector in this test", actor="worker:test")
                return
            time.sleep(0.1)

    t = threading.Thread(target=finish)
    t.start()
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)  # noqa: S102 (the README example, run as written)
    t.join(30)
    out = capsys.readouterr().out.split()
    assert out[:2] == ["in_review", "review"], out
    again = ns["s"].post(f"{live_server}/api/v1/uploads", files={"file": photo.read_bytes()},
                         data={"external_id": "post-123"}, headers={"Idempotency-Key": "post-123"})
    assert again.json()["id"] == ns["upload"]["id"]

    verify_ns: dict = {}
    exec(compile(snippet, "README.md", "exec"), verify_ns)  # noqa: S102
    from core.webhooks.signing import signed_headers

    headers = signed_headers("whsec_x", "ev1", "upload.analyzed", b"{}")
    assert verify_ns["verify"]("whsec_x", headers, b"{}")
    assert not verify_ns["verify"]("whsec_x", headers, b"{ }")
    # a captured delivery replayed under another event id or type fails
    assert not verify_ns["verify"]("whsec_x", {**headers, "Verity-Event-Id": "ev2"}, b"{}")
    assert not verify_ns["verify"]("whsec_x", {**headers, "Verity-Event": "upload.decided"}, b"{}")
    assert not verify_ns["verify"]("whsec_x", {**headers, "Verity-Timestamp": str(int(time.time()) - 3600)}, b"{}")


def test_readme_live_example_runs(api_app, live_server, tmp_path, capsys):
    """The live-session example, as written, on one 2 s chunk; no worker here, so the answer is a
    202 after the default wait (pending), and the summary says the session ended."""
    import requests
    from mediagen import face_image, write_video

    *_, live = python_blocks()
    key = make_key(api_app, "readme-live", show_score=True)
    chunk = write_video(tmp_path / "chunk.mp4", face_image((320, 240), face_height=120), seconds=1.0, fps=10)
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {key}"
    ns = {"s": s, "API": live_server + "/api/v1", "segments": [(0.0, chunk.read_bytes())]}
    exec(compile(live, "README.md", "exec"), ns)  # noqa: S102 (the README example, run as written)
    assert capsys.readouterr().out.split() == ["None", "pending"]
    assert ns["summary"]["state"] == "ended" and ns["summary"]["segments"]["received"] == 1
