"""The detector learns from the moderators: the reliability of its scores against their verdicts,
thresholds for a chosen precision or review load, applied by an admin (audited) and undone."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from core import calibration as cal


def test_reliability_bins_count_and_rate():
    scores = np.array([0.05, 0.15, 0.55, 0.58, 0.95, 0.97, 1.0])
    fakes = np.array([0, 0, 1, 0, 1, 1, 1], dtype=bool)
    bins = cal.reliability(scores, fakes)
    assert [b.n for b in bins] == [1, 1, 0, 0, 0, 2, 0, 0, 0, 3]
    assert bins[5].fake_rate == 0.5 and bins[9].fake_rate == 1.0 and bins[2].fake_rate is None
    assert sum(b.n for b in bins) == len(scores)


def test_threshold_for_precision_is_the_lowest_that_reaches_it():
    rng = np.random.default_rng(0)
    fakes = rng.random(400) < 0.5
    scores = np.clip(np.where(fakes, rng.normal(0.8, 0.12, 400), rng.normal(0.35, 0.15, 400)), 0, 1)
    s = cal.threshold_for_precision(scores, fakes, 0.95)
    sel = scores >= s.threshold
    assert fakes[sel].mean() >= 0.95 and s.support == sel.sum() >= cal.MIN_SUPPORT
    lower = scores[scores < s.threshold].max()  # one step lower misses the target
    assert fakes[scores >= lower].mean() < 0.95
    assert cal.threshold_for_precision(scores[:5], fakes[:5], 0.95).threshold is None  # too few verdicts


def test_threshold_for_load_puts_that_share_above():
    scores = np.linspace(0, 1, 1001)
    s = cal.threshold_for_load(scores, 0.05)
    assert abs(s.achieved - 0.05) < 0.002 and s.support == int((scores >= s.threshold).sum())
    with pytest.raises(ValueError):
        cal.threshold_for_load(scores, 0)


def _decided(app, scores_and_verdicts):
    """Uploads with an analysis and a moderator's verdict, as the review flow leaves them."""
    import uuid

    from core.models import Analysis, Decision, Upload

    with app.extensions["verity.db"].session() as s:
        for score, verdict in scores_and_verdicts:
            up = Upload(id=uuid.uuid4().hex, sha256=uuid.uuid4().hex * 2, kind="image", mime="image/jpeg", bytes=1,
                        status=verdict, source="api")
            s.add(up)
            s.flush()
            s.add(Analysis(upload_id=up.id, sha256=up.sha256, model_name="m", model_version="1", provider="cpu",
                           score=score, label="suspected_fake"))
            s.add(Decision(upload_id=up.id, moderator="mod", outcome=verdict, score=score, label="suspected_fake"))
        s.commit()


def test_an_admin_applies_suggested_thresholds_and_undoes_them(settings):
    from app import create_app
    from core.models import AuditEvent
    from core.overrides import load_overrides
    from tests.review.kit import Browser, add_user

    app = create_app({"VERITY": settings, "TESTING": True, "VERITY_COOKIE_SECURE": False})
    add_user(app, "mod")
    add_user(app, "boss", role="admin")
    rng = np.random.default_rng(1)
    rows = [(float(np.clip(rng.normal(0.85, 0.08), 0, 1)), "confirmed_fake") for _ in range(40)]
    rows += [(float(np.clip(rng.normal(0.4, 0.15), 0, 1)), "authentic") for _ in range(40)]
    _decided(app, rows)
    mod = Browser(app)
    mod.login("mod")
    assert mod.get("/review/admin/calibration").status_code == 403
    boss = Browser(app)
    boss.login("boss")
    page = boss.get("/review/admin/calibration?precision=0.95&load=0.2").get_data(as_text=True)
    assert 'id="reliability"' in page and "80 moderator verdicts" in page
    with app.extensions["verity.db"].session() as s:
        scores, fakes = cal.labelled_scores(s)
        block = cal.threshold_for_precision(scores, fakes, 0.95).threshold
        review = cal.threshold_for_load(cal.analysed_scores(s), 0.2).threshold
    assert f'id="sugg-block">{block:.3f}' in page and f'id="sugg-review">{review:.3f}' in page
    block = max(block, review)  # as the page's form offers it: block >= review
    r = boss.post("/review/admin/calibration/apply", {"review_threshold": f"{review:.3f}", "block_threshold": f"{block:.3f}",
                                                       "precision": "0.95", "load": "0.2"})
    assert r.status_code == 302
    with app.extensions["verity.db"].session() as s:
        o = load_overrides(s)
        assert (o["review_threshold"], o["block_threshold"]) == (round(review, 3), round(block, 3))
        applied = s.scalar(select(AuditEvent).where(AuditEvent.action == "calibration.applied"))
        assert applied.actor == "moderator:boss" and applied.detail["before"] == {"review_threshold": None,
                                                                                  "block_threshold": None}
    assert boss.post("/review/admin/calibration/apply", {"review_threshold": "0.9", "block_threshold": "0.5"}
                     ).status_code == 400
    assert boss.post("/review/admin/calibration/undo").status_code == 302
    with app.extensions["verity.db"].session() as s:
        o = load_overrides(s)
        assert "review_threshold" not in o and "block_threshold" not in o  # back to the defaults
        assert s.scalar(select(AuditEvent).where(AuditEvent.action == "calibration.undone")) is not None
    assert boss.post("/review/admin/calibration/undo").status_code == 409  # nothing left to undo
    app.extensions["verity.db"].dispose()
