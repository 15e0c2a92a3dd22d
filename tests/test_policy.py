"""The routing policy is a pure function (core/policy.py)."""

from __future__ import annotations

import pytest

from core.policy import Thresholds, route

T = Thresholds(review=0.5, block=0.9)


@pytest.mark.parametrize("score,status,reason", [
    (0.0, "cleared", None),
    (0.4999, "cleared", None),
    (0.5, "in_review", "score_in_review_band"),
    (0.8999, "in_review", "score_in_review_band"),
    (0.9, "blocked", "blocked"),
    (1.0, "blocked", "blocked"),
])
def test_scores_route_by_thresholds(score, status, reason):
    label = "suspected_fake" if score >= 0.5 else "likely_authentic"
    r = route(label, score, T)
    assert (r.status, r.review_reason) == (status, reason)


def test_block_without_confirmation():
    assert route("suspected_fake", 0.95, T, blocked_needs_review=False).review_reason is None


def test_no_face_and_unreadable_route_by_their_settings():
    assert route("no_face", None, T).status == "cleared"
    assert route("no_face", None, T, no_face="in_review").review_reason == "no_face"
    assert route("unreadable", None, T).status == "in_review"
    assert route("unreadable", None, T).review_reason == "unreadable"


def test_a_scored_label_without_a_score_is_never_cleared():
    r = route("likely_authentic", None, T)
    assert r.status == "in_review" and r.review_reason == "analysis_failed"


def test_thresholds_validate():
    with pytest.raises(ValueError):
        Thresholds(review=0.9, block=0.5)


def test_blocks_come_first_in_review():
    assert route("suspected_fake", 0.95, T).priority > route("suspected_fake", 0.6, T).priority
