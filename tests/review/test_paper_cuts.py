"""What a newcomer found in the review UI, on real requests: an item with no score drew a score
bar (green, with no number); the dashboard said "Decisions per hour 0.0" beside "1 in the last
24 h"; rq-dashboard's pages ("Jobs") had no way back; blurred crops had no hint. (The look of
each is in test_browser.py, with screenshots.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.review.kit import make_item


def _row(html: str, item_id: int) -> str:
    m = re.search(rf'<tr[^>]*data-item="{item_id}"[^>]*>(.*?)</tr>', html, re.DOTALL)
    assert m, f"no row for item {item_id}"
    return m.group(1)


@pytest.mark.parametrize("label", ["unreadable", "no_face"])
def test_an_item_with_no_score_draws_no_score_bar(app, browser, label):
    none = make_item(app, score=None, label=label, reason=label, priority=20)
    scored = make_item(app, score=0.42, label="likely_authentic")
    m = browser("mod")
    html = m.get("/review/").get_data(as_text=True)
    row = _row(html, none)
    assert "scorebar" not in row and "fill" not in row
    assert '<span class="noscore">no score</span>' in row
    assert "scorebar" in _row(html, scored) and "0.420" in _row(html, scored)

    page = m.get(f"/review/items/{none}").get_data(as_text=True)
    panel = page[page.index('id="analysis-score"'):][:1200]
    assert '<span class="score-big none">no score</span>' in panel
    assert "score-big lo" not in page and "probability of a manipulated face" not in panel
    assert ("could not be read" if label == "unreadable" else "no face was found") in panel


def test_the_per_hour_rate_agrees_with_the_count():
    from app.review.stats import rate_text

    assert rate_text(0, 24) == "0"
    assert rate_text(1, 24) == "0.042"  # was "0.0" beside "1 in the last 24 h"
    for n in (1, 2, 5, 13, 23, 24, 25, 100, 239, 250, 1000, 12345):
        shown = float(rate_text(n, 24))
        assert shown > 0 and abs(shown * 24 - n) <= 0.05 * n, (n, shown)


def test_the_dashboard_says_its_window_and_its_figures_agree(app, browser):
    admin = browser("admin")
    item = make_item(app, score=0.7)
    admin.post(f"/review/items/{item}/claim")
    assert admin.post(f"/review/items/{item}/decide", {"verdict": "confirmed_fake"}).status_code == 302
    page = admin.get("/review/dashboard").get_data(as_text=True)
    assert "Decisions/hour, last 24 h" in page
    assert 'id="m-per-hour">0.042<' in page
    assert 'id="m-decisions">1 decision in the last 24 h (÷ 24)<' in page


def test_rq_dashboard_pages_carry_a_way_back(app, browser):
    admin = browser("admin")
    r = admin.get("/admin/rq/")
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and r.mimetype == "text/html"
    body = re.search(r"<body[^>]*>\s*", html)
    assert html[body.end():].startswith('<nav id="verity-back"'), html[body.end():body.end() + 80]
    assert re.search(r'<a id="verity-back-link" href="/review/"[^>]*>&larr; Back to the review queue</a>', html)
    assert int(r.headers["Content-Length"]) == len(r.data)
    assert html.count('id="verity-back"') == 1
    for url in ("/admin/rq/0/view/workers", "/admin/rq/0/view/jobs"):
        assert 'id="verity-back-link"' in admin.get(url, follow_redirects=True).get_data(as_text=True), url
    # its JSON, its static files and its errors pass untouched
    data = admin.get("/admin/rq/0/data/queues.json")
    assert data.mimetype == "application/json" and data.get_json() == {"queues": []}
    import rq_dashboard

    css = admin.get("/admin/rq/static/css/main.css")
    assert css.status_code == 200
    assert css.data == (Path(rq_dashboard.__file__).parent / "static" / "css" / "main.css").read_bytes()
    assert b"verity-back" not in admin.get("/admin/rq/0/view/job/no-such-job").data
    # and no one else's pages change
    assert 'id="verity-back"' not in admin.get("/review/").get_data(as_text=True)
    assert browser("mod").get("/admin/rq/").status_code == 403


def test_blurred_crops_carry_a_reveal_hint(app, browser, users):
    from core.models import User

    with app.extensions["verity.db"].session() as s:
        s.get(User, users["mod2"]).blur_media = False
        s.commit()
    item = make_item(app, score=0.7)
    html = browser("mod").get(f"/review/items/{item}").get_data(as_text=True)
    assert 'class="crops blurred"' in html
    assert '<span class="veil"><span>hidden: press <kbd>r</kbd> or click to reveal</span></span>' in html
    assert 'class="crops "' in browser("mod2").get(f"/review/items/{item}").get_data(as_text=True)
