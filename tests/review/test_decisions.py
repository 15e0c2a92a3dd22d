"""Verdicts: records, audit events, status and notification; escalation; admin revisions; the
audit log and its exports; the admin settings the worker reads; the operator dashboard."""

from __future__ import annotations

import csv
import io

import pytest
from sqlalchemy import select

from core.models import AuditEvent, Decision, ReviewItem, Upload
from tests.review.kit import make_item


@pytest.fixture
def sent(app):
    """What the app's lifecycle told its listeners (the webhook outbox is one of them)."""
    got = []

    def listener(upload, status):
        got.append((upload.id, status))

    app.extensions["verity.lifecycle"].subscribe(listener)
    return got


def _upload_of(app, item_id):
    with app.extensions["verity.db"].session() as s:
        return s.get(Upload, s.get(ReviewItem, item_id).upload_id)


def test_a_decision_is_recorded_audited_and_notified(app, browser, sent):
    item = make_item(app, score=0.91, status="blocked", reason="blocked", priority=30)
    m = browser("mod")
    m.post(f"/review/items/{item}/claim")
    r = m.post(f"/review/items/{item}/decide", {"verdict": "confirmed_fake", "note": "blend seam at the jaw"})
    assert r.status_code == 302
    up = _upload_of(app, item)
    assert up.status == "confirmed_fake"
    assert sent == [(up.id, "confirmed_fake")]
    with app.extensions["verity.db"].session() as s:
        d = s.scalar(select(Decision))
        assert (d.moderator, d.outcome, d.note, d.before_status, d.after_status) == \
            ("mod", "confirmed_fake", "blend seam at the jaw", "blocked", "confirmed_fake")
        assert (d.model_name, d.model_version, d.score, d.label) == ("verity-sbi", "1.0.0", 0.91, "suspected_fake")
        ev = s.scalar(select(AuditEvent).where(AuditEvent.action == "review.decided"))
        assert (ev.actor, ev.before, ev.after, ev.upload_id) == ("moderator:mod", "blocked", "confirmed_fake", up.id)
        assert ev.detail["model_version"] == "1.0.0" and ev.detail["score"] == 0.91
        assert ev.detail["note"] == "blend seam at the jaw" and ev.detail["decision_id"] == d.id
        assert s.get(ReviewItem, item).state == "decided"
    # the item has left the queue
    assert f'data-item="{item}"' not in m.get("/review/").get_data(as_text=True)


def test_decide_then_next_opens_the_next_item(app, browser):
    a = make_item(app, score=0.9)
    b = make_item(app, score=0.6)
    m = browser("mod")
    m.post(f"/review/items/{a}/claim")
    r = m.post(f"/review/items/{a}/decide", {"verdict": "authentic", "then": "next"})
    assert r.headers["Location"].endswith(f"/review/items/{b}")


def test_bad_verdict_is_refused(app, browser):
    item = make_item(app)
    m = browser("mod")
    m.post(f"/review/items/{item}/claim")
    assert m.post(f"/review/items/{item}/decide", {"verdict": "fake"}).status_code == 400


def test_inconclusive_escalates_to_an_admin(app, browser, sent):
    item = make_item(app)
    m, m2, admin = browser("mod"), browser("mod2"), browser("admin")
    m.post(f"/review/items/{item}/claim")
    m.post(f"/review/items/{item}/decide", {"verdict": "inconclusive", "note": "too dark"})
    up = _upload_of(app, item)
    assert up.status == "inconclusive"
    with app.extensions["verity.db"].session() as s:
        it = s.get(ReviewItem, item)
        assert it.state == "open" and it.claimed_by is None
    # moderators cannot pick it up; admins see it as escalated and decide it
    assert m2.post("/review/next").headers["Location"].endswith("empty=1")
    assert "taken=1" in m2.post(f"/review/items/{item}/claim").headers["Location"]
    assert f'data-item="{item}"' in admin.get("/review/?state=escalated").get_data(as_text=True)
    assert admin.post("/review/next").headers["Location"].endswith(f"/review/items/{item}")
    admin.post(f"/review/items/{item}/decide", {"verdict": "authentic"})
    assert _upload_of(app, item).status == "authentic"
    assert [e for _, e in sent] == ["inconclusive", "authentic"]
    with app.extensions["verity.db"].session() as s:
        actions = [e.action for e in s.scalars(select(AuditEvent).where(AuditEvent.action.like("review.%")))]
    assert "review.escalated" in actions and actions[-1] == "review.decided"


def test_admin_revises_never_deletes(app, browser, sent):
    item = make_item(app)
    m, admin = browser("mod"), browser("admin")
    m.post(f"/review/items/{item}/claim")
    m.post(f"/review/items/{item}/decide", {"verdict": "authentic"})
    up = _upload_of(app, item)
    assert m.post(f"/review/uploads/{up.id}/revise", {"verdict": "confirmed_fake"}).status_code == 403
    r = admin.post(f"/review/uploads/{up.id}/revise", {"verdict": "confirmed_fake", "note": "second look"})
    assert r.status_code == 302
    assert _upload_of(app, item).status == "confirmed_fake"
    with app.extensions["verity.db"].session() as s:
        ds = s.scalars(select(Decision).order_by(Decision.id)).all()
        assert [(d.outcome, d.moderator) for d in ds] == [("authentic", "mod"), ("confirmed_fake", "admin")]
        assert ds[1].revises_id == ds[0].id and ds[1].before_status == "authentic"
        ev = s.scalar(select(AuditEvent).where(AuditEvent.action == "review.revised"))
        assert ev.before == "authentic" and ev.after == "confirmed_fake" and ev.detail["revises"] == ds[0].id
    assert sent[-1] == (up.id, "confirmed_fake")
    page = admin.get(f"/review/items/{item}").get_data(as_text=True)
    assert "review.revised" in page and "second look" in page


def test_audit_log_view_and_exports(app, browser):
    item = make_item(app)
    m, admin = browser("mod"), browser("admin")
    m.post(f"/review/items/{item}/claim")
    m.post(f"/review/items/{item}/decide", {"verdict": "authentic", "note": "=HYPERLINK(\"x\")"})
    up = _upload_of(app, item)
    page = admin.get(f"/review/audit?upload={up.id}").get_data(as_text=True)
    assert "review.decided" in page and "review.claimed" in page
    r = admin.get(f"/review/audit.csv?upload={up.id}")
    assert r.mimetype == "text/csv" and "attachment" in r.headers["Content-Disposition"]
    table = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
    assert [t["action"] for t in table] == ["review.claimed", "review.decided"]
    decided = table[1]
    assert decided["before"] == "in_review" and decided["after"] == "authentic" and decided["actor"] == "moderator:mod"
    assert '"model_version": "1.0.0"' in decided["detail"]
    j = admin.get(f"/review/audit.json?upload={up.id}").json
    assert j["count"] == 2 and j["events"][1]["detail"]["note"] == '=HYPERLINK("x")'
    # a note cannot smuggle a spreadsheet formula into the CSV
    r = admin.get("/review/audit.csv?action=review.decided")
    assert all(not cell.startswith("=") for row in csv.reader(io.StringIO(r.get_data(as_text=True))) for cell in row)


def test_settings_page_changes_what_the_worker_reads(app, browser, settings):
    from core.overrides import effective_routing, effective_settings, review_due_seconds

    admin = browser("admin")
    form = {"review_threshold": "0.3", "block_threshold": "0.95", "route_no_face": "in_review",
            "route_unreadable": "blocked", "blocked_needs_review": "on", "review_sla_hours": "4"}
    r = admin.post("/review/admin/settings", form)
    assert r.status_code == 200 and "Saved" in r.get_data(as_text=True)
    with app.extensions["verity.db"].session() as s:
        eff = effective_settings(s, settings)
        assert (eff.review_threshold, eff.block_threshold, eff.route_no_face, eff.route_unreadable) == \
            (0.3, 0.95, "in_review", "blocked")
        assert review_due_seconds(s) == 4 * 3600
        assert effective_routing(s, settings).thresholds_from == "admin setting"
        ev = s.scalar(select(AuditEvent).where(AuditEvent.action == "settings.changed"))
        assert ev.actor == "moderator:admin" and ev.detail["review_threshold"] == {"before": None, "after": 0.3}
    bad = dict(form, review_threshold="0.99")
    r = admin.post("/review/admin/settings", bad)
    assert r.status_code == 400 and "block threshold" in r.get_data(as_text=True)


def test_dashboard_numbers(app, browser):
    from app.review import stats

    admin = browser("admin")
    # three flagged items judged: two fakes, one authentic; one blocked judged authentic
    cases = [(0.7, "confirmed_fake"), (0.8, "confirmed_fake"), (0.6, "authentic"), (0.97, "authentic")]
    for score, verdict in cases:
        i = make_item(app, score=score)
        admin.post(f"/review/items/{i}/claim")
        admin.post(f"/review/items/{i}/decide", {"verdict": verdict})
    make_item(app, score=0.55)
    with app.extensions["verity.db"].session() as s:
        d = stats.dashboard(s, review_threshold=0.5, block_threshold=0.9)
    assert d["counts"]["waiting"] == 1 and d["decisions_24h"] == 4
    assert d["precision_flagged"] == pytest.approx(0.5)  # 2 fakes of 4 judged above 0.5
    assert d["authentic_among_blocked"] == 1.0 and d["authentic_among_blocked_n"] == 1
    page = admin.get("/review/dashboard").get_data(as_text=True)
    assert 'id="m-waiting">1<' in page and "50%" in page
