"""Pure pieces of live sessions and the occlusion check: the rolling score, how the check's score
joins the classifier's, how frames are spread for the classifier."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from core.live import OCCLUSION_DECISIVE, rolling_score
from core.models import SegmentState
from detector.aggregate import occlusion_reasons, with_occlusion
from detector.occlusion import OcclusionResult, _runs
from detector.pipeline import _spread


def seg(score, occ=None, state=SegmentState.ANALYZED):
    return SimpleNamespace(state=state, score=score, evidence={"occlusion": occ} if occ is not None else {})


def test_rolling_score_is_the_mean_of_the_two_worst_segments_unless_a_hand_caught_a_paste():
    assert rolling_score([]) is None
    assert rolling_score([seg(None), seg(0.9, state=SegmentState.QUEUED)]) is None
    assert rolling_score([seg(0.2), seg(0.9), seg(0.5)]) == pytest.approx(0.7)  # one odd segment never decides alone
    assert rolling_score([seg(0.9)]) == pytest.approx(0.9)
    caught = seg(0.85, {"score": OCCLUSION_DECISIVE + 0.1})
    assert rolling_score([seg(0.1), caught, seg(0.2)]) == pytest.approx(0.85)
    behaved = seg(0.85, {"score": 0.1})
    assert rolling_score([seg(0.1), behaved, seg(0.2)]) == pytest.approx(0.525)


def test_the_occlusion_check_raises_a_score_and_never_lowers_it():
    caught = OcclusionResult(True, 16, 8.0, score=0.9, reasons=["occlusion: cut off"])
    behaved = OcclusionResult(True, 16, 8.0, score=0.0, reasons=["occlusion: real"])
    nothing = OcclusionResult(True, 16, 8.0, score=None)
    unchecked = OcclusionResult(False, 2, None, score=None)
    assert with_occlusion(0.3, caught) == 0.9
    assert with_occlusion(0.95, behaved) == 0.95
    assert with_occlusion(0.3, nothing) == 0.3 and with_occlusion(0.3, unchecked) == 0.3 and with_occlusion(0.3, None) == 0.3
    assert with_occlusion(None, caught) is None  # no face scored: nothing to raise
    assert occlusion_reasons(caught, 0.3, 0.9, 0.8)[-1] == "the occlusion check raised the score from 0.30 to 0.90"
    assert occlusion_reasons(behaved, 0.95, 0.95, 0.8) == ["occlusion: real"]


def test_runs_merge_one_frame_gaps_and_spread_picks_evenly():
    import numpy as np

    assert _runs(np.array([0, 1, 1, 0, 1, 0, 0, 1], bool)) == [(1, 4), (7, 7)]
    assert _runs(np.zeros(5, bool)) == []
    assert _spread([0, 1, 2], 6) == [0, 1, 2]
    assert _spread(list(range(16)), 6) == [0, 3, 6, 9, 12, 15]
