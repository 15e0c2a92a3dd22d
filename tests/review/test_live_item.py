"""A suspected live session in the review queue: first in line, its worst segment as the media,
and the session's timeline in call time on the item page."""

from __future__ import annotations

import io

from mediagen import face_image, write_video
from sqlalchemy import select

from core.models import ReviewItem


def test_a_suspected_call_is_first_in_the_queue_with_its_timeline(app, browser, run_jobs, settings, tmp_path):
    from core.clients import create_client

    with app.extensions["verity.db"].session() as s:
        key = create_client(s, "caller", show_score=True, review_threshold=0.05, block_threshold=0.99).key
    api = app.test_client()
    api.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    chunk = write_video(tmp_path / "chunk.mp4", face_image((640, 480), face_height=260), seconds=2.0, fps=15)
    upload = api.post("/api/v1/uploads", data={"file": (io.BytesIO(chunk.read_bytes()), "up.mp4")})
    assert upload.status_code == 202
    live = api.post("/api/v1/live", json={"external_id": "call-1"}).get_json()
    for start in (0.0, 2.0):
        r = api.post(f"/api/v1/live/{live['id']}/segments?wait=0",
                     data={"file": (io.BytesIO(chunk.read_bytes()), "seg.mp4"), "start": str(start)})
        assert r.status_code == 202
    run_jobs(settings)
    session = api.get(f"/api/v1/live/{live['id']}").get_json()
    assert session["verdict"] == "suspected"

    mod = browser("mod")
    with app.extensions["verity.db"].session() as s:
        items = s.scalars(select(ReviewItem).where(ReviewItem.state == "open")
                          .order_by(ReviewItem.priority.desc(), ReviewItem.id)).all()
        assert items[0].upload_id == session["review"]["upload_id"] and items[0].reason == "live_suspected"
        item_id = items[0].id
    queue = mod.get("/review/").get_data(as_text=True)
    assert "live_suspected" in queue or "live suspected" in queue
    html = mod.get(f"/review/items/{item_id}").get_data(as_text=True)
    assert "Live call" in html and f"Session {live['id']}" in html
    assert 'id="live-seg-0"' in html and 'id="live-seg-1"' in html and "2.0 s" in html
