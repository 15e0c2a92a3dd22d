"""The hand-over-the-face check (detector/occlusion.py) on real media: a real GRID talking face with
a hand passing across it, the same clip with a swapped face pasted over the hand (what a tool
without an occlusion mask does), and the clean clip. Clips made by tests/occlusionclips.py."""

from __future__ import annotations

import pytest
from occlusionclips import TALKING_FACES, TINY_CLIP, read_frames, tiny_pair, write_mp4


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("occlusion")
    real, fake = tiny_pair(d, seed=0, recipe="paste")
    frames, fps = read_frames(TALKING_FACES / TINY_CLIP, 2.6)
    clean = write_mp4(frames, fps, d / "clean.mp4", crf=20, preset="ultrafast")
    return {"real": real, "fake": fake, "clean": clean}


def test_a_hand_over_a_pasted_face_is_caught_and_a_real_face_passes(shared_detector, pair):
    real = shared_detector.analyze_path(pair["real"])
    fake = shared_detector.analyze_path(pair["fake"])
    for r in (real, fake):
        occ = r.occlusion
        assert occ["checked"] and occ["frames"] >= 16  # a 2.6 s clip is sampled at 8 fps or more
        event = max(occ["events"], key=lambda e: e["covered"])
        assert 0.8 <= event["peak"] <= 2.0 and event["covered"] >= 0.3  # the hand's pass, as made
    assert real.occlusion["score"] < 0.5 <= fake.occlusion["score"]
    assert any(e["face_lost"] for e in real.occlusion["events"])  # the real face gave way behind the hand
    assert fake.score >= fake.occlusion["score"] and fake.score >= fake.classifier_score
    assert any("stayed whole and steady" in x for x in fake.reasons)
    assert real.score == real.classifier_score  # a face that behaved never lowers the classifier's word


def test_nothing_passing_in_front_of_the_face_is_no_event(shared_detector, pair):
    r = shared_detector.analyze_path(pair["clean"])
    assert r.occlusion["checked"] and r.occlusion["events"] == [] and r.occlusion["score"] is None
    assert r.score == r.classifier_score
    assert "nothing passed in front of the face" in r.reasons
