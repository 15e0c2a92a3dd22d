"""The evidence view: media served safely, crops cut from the real blob, facts, and one real
analysis by the shipped detector routed by the admin's settings."""

from __future__ import annotations

import io

from mediagen import face_image, jpeg_bytes, no_face_image, write_video
from PIL import Image
from sqlalchemy import select

from core.models import ReviewItem, Upload
from tests.review.kit import evidence_for, make_item


def _upload_id(app, item):
    with app.extensions["verity.db"].session() as s:
        return s.get(ReviewItem, item).upload_id


def test_media_is_served_safely_to_moderators(app, browser):
    data = jpeg_bytes(no_face_image((320, 240)))
    item = make_item(app, data=data)
    m = browser("mod")
    r = m.get(f"/review/media/{_upload_id(app, item)}")
    assert r.status_code == 200 and r.data == data
    assert r.headers["Content-Type"] == "image/jpeg"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Content-Disposition"].startswith("inline; filename=")
    assert "sandbox" in r.headers["Content-Security-Policy"]
    assert "no-store" in r.headers["Cache-Control"]


def test_an_unlisted_type_is_served_as_bytes(app, browser):
    item = make_item(app, mime="image/svg+xml")
    r = browser("mod").get(f"/review/media/{_upload_id(app, item)}")
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.headers["Content-Disposition"].endswith('.bin"')


def test_video_is_seekable_and_cropped_per_frame(app, browser, tmp_path):
    path = write_video(tmp_path / "v.mp4", no_face_image((320, 240)), seconds=2.0, fps=15)
    data = path.read_bytes()
    ev = evidence_for(320, 240, [0.2, 0.9, None, 0.6], kind="video", duration=2.0)
    item = make_item(app, kind="video", data=data, evidence=ev, score=0.75)
    m = browser("mod")
    uid = _upload_id(app, item)
    r = m.get(f"/review/media/{uid}", headers={"Range": "bytes=0-99"})
    assert r.status_code == 206 and len(r.data) == 100 and r.headers["Content-Type"] == "video/mp4"
    page = m.get(f"/review/items/{item}").get_data(as_text=True)
    assert page.count('class="tick') == 4 and "<video" in page
    with app.extensions["verity.db"].session() as s:
        aid = s.get(Upload, uid).latest_analysis.id
    # rank 0 is the 0.9 face, at the second sampled frame
    assert 'data-t="0.75"' in page
    r = m.get(f"/review/crops/{aid}/0.jpg")
    assert r.status_code == 200 and r.mimetype == "image/jpeg"
    im = Image.open(io.BytesIO(r.data))
    assert max(im.size) <= 160
    assert m.get(f"/review/crops/{aid}/9.jpg").status_code == 404


def test_evidence_page_shows_the_facts(app, browser):
    data = jpeg_bytes(no_face_image((320, 240)))
    first = make_item(app, data=data, score=0.66)
    second = make_item(app, data=data, score=0.66)
    m = browser("mod")
    m.post(f"/review/items/{second}/claim")
    page = m.get(f"/review/items/{second}").get_data(as_text=True)
    import hashlib

    for fact in ("0.660", "suspected fake", "verity-sbi", "1.0.0", "CPUExecutionProvider", "score 0.66",
                 hashlib.sha256(data).hexdigest(), "320 × 240", "image/jpeg", "decode 5 ms",
                 _upload_id(app, first)[:10], "Confirmed fake", "<kbd>f</kbd>", "claim-left"):
        assert fact in page, fact
    assert 'class="viewer blurred"' in page  # blurred by default
    m.post("/review/me/blur", {"blur": "0"})
    assert 'class="viewer "' in m.get(f"/review/items/{second}").get_data(as_text=True)


def test_a_real_analysis_lands_in_the_queue(app, browser, run_jobs, settings):
    """The shipped detector on a real face photo; the admin's review threshold 0 sends it to review."""
    admin = browser("admin")
    admin.post("/review/admin/settings", {"review_threshold": "0.0", "block_threshold": "1.0",
                                          "route_no_face": "in_review", "route_unreadable": "in_review",
                                          "review_sla_hours": "2"})
    with app.extensions["verity.db"].session() as s:
        up = app.extensions["verity.lifecycle"].accept(
            s, io.BytesIO(jpeg_bytes(face_image((640, 480), face_height=300))), "face.jpg", "api", actor="api")
    from workers.context import configure

    run_jobs(settings)
    configure(settings)  # (leave the worker context as the session found it)
    with app.extensions["verity.db"].session() as s:
        item = s.scalar(select(ReviewItem).where(ReviewItem.upload_id == up.id))
        assert item is not None and s.get(Upload, up.id).status == "in_review"
        from app.review.queue import aware

        hours = (aware(item.due_at) - aware(item.created_at)).total_seconds() / 3600
        assert 1.99 < hours < 2.01
        analysis = s.get(Upload, up.id).latest_analysis
    assert analysis.label in ("suspected_fake", "likely_authentic")
    page = admin.get(f"/review/items/{item.id}").get_data(as_text=True)
    assert analysis.model_version in page and "Top-scoring faces" in page
    r = admin.get(f"/review/crops/{analysis.id}/0.jpg")
    assert r.status_code == 200 and Image.open(io.BytesIO(r.data)).size[0] > 20


def test_the_evidence_shows_the_known_fake_it_matches_and_what_the_file_declares(app, browser):
    from core.bank import add_entry
    from tests.review.kit import evidence_for, make_item

    with app.extensions["verity.db"].session() as s:
        entry, _ = add_entry(s, "image", source="cli", actor="test", sha256="ef" * 32, note="the mayor swap")
        s.commit()
    ev = evidence_for(320, 240, [0.4])
    ev["matches"] = [{"entry_id": entry.id, "algorithm": "pdq", "distance": 40, "match_percent": None,
                      "source": "cli", "near": True}]
    ev["provenance"] = {"claims": [{"source": "xmp", "kind": "digital_source_type",
                                    "value": "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia",
                                    "verified": False, "declares": "synthetic", "detail": {}}],
                        "declared_synthetic": True, "declared_capture": False, "checked": ["xmp"], "errors": []}
    item = make_item(app, score=0.4, label="declared_synthetic", reason="near_known_fake", evidence=ev)
    html = browser("admin").get(f"/review/items/{item}").get_data(as_text=True)
    assert 'id="known-fakes"' in html and "Near miss" in html and entry.id in html and "distance 40 of 256" in html
    assert "the mayor swap" in html
    assert 'id="provenance"' in html and "declares itself synthetic" in html and "trainedAlgorithmicMedia" in html
    assert "not verified" in html
