"""The hand-over-face (occlusion) check where people read it, without a browser: the upload
page's status route gives the uploading browser its summary (words always, scores only where the
operator shows them); the evidence page bands each event on the frame timeline and lists it in a
"Hand over the face" panel; an image, or an analysis made before the check, shows nothing. The
browser side is tests/test_record_check_browser.py."""

from __future__ import annotations

import re

import pytest

from core.models import ReviewItem, Upload
from tests.review.kit import evidence_for, make_item

OCCLUSION = {
    "checked": True, "frames": 125, "fps": 25.0, "score": 0.81,
    "reasons": ["the face's edge broke up while the hand crossed it"],
    "events": [
        # out of order, on purpose: the pages sort them
        {"start": 3.0, "end": 3.5, "peak": 3.25, "covered": 0.2, "score": 0.1},
        {"start": 1.0, "end": 2.0, "peak": 1.5, "covered": 0.62, "score": 0.93},
    ],
}


def _video_item(app, occlusion=None, *, status="in_review", source="api", kind="video"):
    ev = evidence_for(320, 240, [0.2, 0.9, 0.4, 0.6], kind=kind, duration=4.0)  # frames at 0.5, 1.5, 2.5, 3.5 s
    if occlusion is not None:
        ev["occlusion"] = occlusion
    item = make_item(app, kind=kind, evidence=ev, score=0.75, status=status)
    with app.extensions["verity.db"].session() as s:
        up = s.get(Upload, s.get(ReviewItem, item).upload_id)
        up.source = source
        s.commit()
        return item, up.id


def _status(app, upload_id):
    from app.page.tokens import status_capability

    cap = status_capability(app.config["VERITY"].secret_key, upload_id)
    return app.test_client().get(f"/uploads/{upload_id}/status?cap={cap}")


@pytest.mark.parametrize("show_score", [True, False])
def test_the_status_route_says_what_the_hand_over_the_face_showed(settings, show_score):
    from app import create_app

    app = create_app({"VERITY": settings.with_(show_score=show_score), "TESTING": True})
    try:
        _, uid = _video_item(app, OCCLUSION, source="page")
        r = _status(app, uid)
        assert r.status_code == 200
        occ = r.get_json()["occlusion"]
        assert occ["checked"] is True and occ["hand_seen"] is True and occ["pasted"] is True
        assert occ["headline"] == "The face stayed whole over the hand like a pasted one when a hand passed in front of it."
        assert [e["start"] for e in occ["events"]] == [1.0, 3.0]  # in time order
        first, second = occ["events"]
        assert first["text"] == "1.0–2.0 s: 62% of the face covered; the face stayed whole over the hand like a pasted one."
        assert second["text"] == "3.0–3.5 s: 20% of the face covered; the face behaved like a real one."
        assert (first["pasted"], second["pasted"]) == (True, False)
        assert (first["peak"], first["covered"]) == (1.5, 0.62)
        assert occ["reasons"] == OCCLUSION["reasons"]
        # the numbers only where the operator shows scores, like the detector's own score
        assert ("score" in occ) == show_score and ("score" in first) == show_score
        if show_score:
            assert occ["score"] == 0.81 and first["score"] == 0.93
    finally:
        app.extensions["verity.db"].dispose()


def test_the_status_route_without_the_check_has_no_occlusion_field(app):
    _, old = _video_item(app, None, source="page")  # analysed before the check existed
    assert "occlusion" not in _status(app, old).get_json()
    _, image = _video_item(app, OCCLUSION, source="page", kind="image")  # never for an image
    assert "occlusion" not in _status(app, image).get_json()


@pytest.mark.parametrize(("occlusion", "headline"), [
    ({"checked": True, "frames": 120, "fps": 24.0, "events": [], "score": None, "reasons": []},
     "No hand passed in front of the face."),
    ({"checked": False, "frames": 0, "fps": 0.0, "events": [], "score": None, "reasons": ["no face to follow"]},
     "The hand-over-face check did not run on this video."),
])
def test_the_status_route_says_when_no_hand_passed(app, occlusion, headline):
    _, uid = _video_item(app, occlusion, source="page")
    occ = _status(app, uid).get_json()["occlusion"]
    assert occ["headline"] == headline and occ["hand_seen"] is False and occ["events"] == []
    assert occ["pasted"] is None and occ["reasons"] == occlusion["reasons"]


def test_malformed_occlusion_evidence_is_read_safely():
    from app.page.occlusion import read, summary

    assert read(None) is None and read({}) is None and read({"occlusion": "yes"}) is None
    occ = read({"occlusion": {"checked": 1, "events": [
        {"start": 2.0, "end": 1.0, "peak": 9.0, "covered": 1.7, "score": float("nan")},  # ends swapped, out of range
        {"start": "soon"}, None, {"end": 1.0}]}})
    assert occ["events"] == [{"start": 1.0, "end": 2.0, "peak": 2.0, "covered": 1.0, "score": None}]
    assert occ["checked"] is True and occ["score"] is None and occ["reasons"] == []
    said = summary({"occlusion": {"checked": True, "events": occ["events"]}}, show_score=True)
    assert said["headline"] == "A hand passed in front of the face; how the face behaved was not measured."
    assert said["events"][0]["text"].endswith("100% of the face covered; how the face behaved was not measured.")


def _bands(html):
    return re.findall(r'<div class="occ-band ([a-z]+)" data-t="([0-9.]+)" id="occ-band-(\d)"\s+style="left: '
                      r'calc\(6px \+ \(100% - 12px\) \* ([0-9.]+)\); width: calc\(\(100% - 12px\) \* ([0-9.]+)\)"'
                      r'\s+title="([^"]*)">\s*<span class="occ-peak" style="left: ([0-9.]+)%">', html)


def test_the_evidence_page_bands_each_event_on_the_timeline(app, browser):
    item, _ = _video_item(app, OCCLUSION)
    html = browser("mod").get(f"/review/items/{item}").get_data(as_text=True)
    assert html.count('class="tick') == 4
    bands = _bands(html)
    assert len(bands) == 2, html[html.find('id="timeline"'):][:3000]
    (kind1, t1, n1, left1, width1, title1, peak1), (kind2, t2, n2, left2, width2, title2, peak2) = bands
    # the ticks sit at 1/8, 3/8, 5/8, 7/8 of the width for 0.5, 1.5, 2.5, 3.5 s: 1.0-2.0 s spans
    # 2/8..4/8, its peak (1.5 s) in the band's middle; 3.0-3.5 s spans 6/8..7/8
    assert (kind1, t1, n1) == ("pasted", "1.5", "1") and (kind2, t2, n2) == ("real", "3.25", "2")
    assert (float(left1), float(width1), float(peak1)) == (0.25, 0.25, 50.0)
    assert (float(left2), float(width2), float(peak2)) == (0.75, 0.125, 50.0)
    assert "62% of the face covered" in title1 and "Score 0.930" in title1 and "pasted" in title1
    assert "20% of the face covered" in title2 and "Score 0.100" in title2 and "like a real one" in title2
    assert 'id="occ-legend"' in html
    panel = html[html.find('id="occlusion"'):]
    panel = panel[:panel.find("</div></div>")]
    assert "<h2>Hand over the face</h2>" in panel and 'data-pasted="true"' in panel
    assert panel.count('class="occ-event ') == 2 and 'data-t="1.5"' in panel and 'data-t="3.25"' in panel
    assert "the face&#39;s edge broke up while the hand crossed it" in panel
    assert "125 frames checked at 25 per second" in panel and "score 0.810" in panel


def test_the_evidence_page_shows_no_hand_over_the_face_without_the_check(app, browser):
    m = browser("mod")
    item, _ = _video_item(app, None)
    html = m.get(f"/review/items/{item}").get_data(as_text=True)
    assert 'class="tick' in html and "occ-band" not in html and 'id="occlusion"' not in html
    image = make_item(app, evidence={**evidence_for(320, 240, [0.7]), "occlusion": OCCLUSION})
    html = m.get(f"/review/items/{image}").get_data(as_text=True)
    assert "occ-band" not in html and 'id="occlusion"' not in html


def test_a_checked_video_with_no_hand_says_so_on_the_evidence_page(app, browser):
    item, _ = _video_item(app, {"checked": True, "frames": 100, "fps": 25.0, "events": [], "score": None,
                                "reasons": ["no hand crossed the face"]})
    html = browser("mod").get(f"/review/items/{item}").get_data(as_text=True)
    assert 'id="occlusion"' in html and "No hand passed in front of the face." in html
    assert "no hand crossed the face" in html and "occ-band" not in html and 'id="occ-legend"' not in html
