"""The words and the small files of the pages, without a browser: what the upload page's result
card says for each status and label, and the favicon every browser asks for (it answered 404,
in every console). The browser side is tests/test_upload_page_states.py."""

from __future__ import annotations

import pytest

from core.models import Status

TERMINAL = (Status.CLEARED, Status.IN_REVIEW, Status.BLOCKED, Status.CONFIRMED_FAKE, Status.AUTHENTIC,
            Status.INCONCLUSIVE)
LABELS = ("likely_authentic", "suspected_fake", "no_face", "unreadable")


@pytest.mark.parametrize("status", TERMINAL)
@pytest.mark.parametrize("label", LABELS)
def test_each_outcome_is_plain_words(status, label):
    from app.page import outcome

    title, text = outcome(status, label)
    assert title and text.endswith(".") and text[0].isupper()
    assert "_" not in title + text and len(text.split()) >= 5, (title, text)  # words, not a code
    if status in Status.VERDICTS:  # a moderator's verdict says more than the label
        assert "moderator" in text
    elif label == "no_face":
        assert title == "No face found" and "nothing was checked" in text and "not a judgement" in text
    elif label == "unreadable":
        assert title == "Could not be read" and "nothing was checked" in text
    if status == Status.IN_REVIEW:
        assert "moderator" in (title + text)


@pytest.mark.parametrize(("status", "label", "title"), [
    (Status.CLEARED, "likely_authentic", "Cleared"),
    (Status.IN_REVIEW, "suspected_fake", "Sent to a human moderator"),
    (Status.BLOCKED, "suspected_fake", "Blocked"),
    (Status.CONFIRMED_FAKE, "suspected_fake", "Confirmed fake"),
    (Status.AUTHENTIC, "suspected_fake", "Judged authentic"),
    (Status.INCONCLUSIVE, "suspected_fake", "Inconclusive"),
    (Status.CLEARED, "no_face", "No face found"),
    (Status.IN_REVIEW, "unreadable", "Could not be read"),
])
def test_the_titles(status, label, title):
    from app.page import outcome

    assert outcome(status, label)[0] == title


def test_pending_states_keep_their_words():
    from app.page import outcome

    assert outcome(Status.QUEUED, None)[1] == "Waiting for a worker"
    assert outcome(Status.ANALYZING, None)[1] == "Analysing"


def test_size_text():
    from app.page import size_text

    assert size_text(200 * 1024 * 1024) == "200 MB"
    assert size_text(300_000) == "293 KB"
    assert size_text(1536) == "1.5 KB"
    assert size_text(900) == "900 bytes"
    assert size_text(2 << 30) == "2 GB"


def test_the_favicon_is_served_and_linked(app):
    from tests.review.kit import Browser, add_user

    c = app.test_client()
    r = c.get("/favicon.ico")
    assert r.status_code == 200 and r.mimetype.startswith("image/")
    assert r.data[:4] == b"\x00\x00\x01\x00"  # an ICO file
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    svg = c.get("/static/favicon.svg")
    assert svg.status_code == 200 and svg.mimetype == "image/svg+xml" and b"<svg" in svg.data
    assert c.get("/static/favicon.ico").status_code == 200  # where rq-dashboard's pages look for it
    add_user(app, "boss", "admin")
    b = Browser(app)
    b.login("boss")
    for url in ("/", "/auth/login", "/review/", "/review/dashboard"):
        html = (b if url != "/auth/login" else c).get(url).get_data(as_text=True)
        assert '<link rel="icon" href="/favicon.ico"' in html, url
        assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in html, url
