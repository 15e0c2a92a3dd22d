"""The occlusion clips (tests/occlusionclips.py): a real talking face with a hand passing in front
of it, and its fake with the swapped face pasted over the hand, as a swap tool without an
occlusion mask makes it."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from occlusionclips import (
    TALKING_FACES,
    TINY_CLIP,
    box_coverage,
    draw_hand,
    make_face_detector,
    read_frames,
    tiny_pair,
    write_y4m,
)

from training.faceswap import inner_face_ellipse


@pytest.fixture(scope="module")
def detector():
    return make_face_detector(score_threshold=0.05)


@pytest.fixture(scope="module")
def pair(tmp_path_factory, detector):
    folder = tmp_path_factory.mktemp("occlusion")
    real, fake = tiny_pair(folder, detector=make_face_detector())
    meta = json.loads((folder / "tiny-real-0.json").read_text())
    return real, fake, meta


def best(detector, rgb):
    faces = detector.detect(rgb)
    return max(faces, key=lambda f: f.score) if faces else None


def ellipse_mask(shape, landmarks, grow: float = 1.0):
    pts = inner_face_ellipse(landmarks)
    c = pts.mean(0)
    pts = c + (pts - c) * grow
    m = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(m, [np.rint(pts).astype(np.int32)], 1)
    return m.astype(bool)


def test_tiny_pair_is_two_readable_clips_of_the_same_frames(pair):
    real, fake, meta = pair
    rf, rfps = read_frames(real)
    ff, ffps = read_frames(fake)
    assert len(rf) == len(ff) == meta["frames"] >= 50
    assert rf[0].shape == ff[0].shape == (288, 360, 3)
    assert float(rfps) == float(ffps) == 25.0


def test_the_hand_covers_the_face_at_the_peak_and_not_before(pair, detector):
    real, _, meta = pair
    cov = np.array(meta["coverage"])
    assert meta["peak_coverage"] >= 0.4
    assert cov[:15].max() == 0 and cov[-10:].max() < 0.05        # it enters, passes and leaves
    rf, _ = read_frames(real)
    clean, _ = read_frames(TALKING_FACES / TINY_CLIP, 0.2)
    assert best(detector, clean[0]).score > 0.9                   # the face is found in clean frames
    assert best(detector, rf[0]).score > 0.9


def test_the_fake_pastes_a_face_over_the_hand(pair, detector):
    real, fake, meta = pair
    rf, _ = read_frames(real)
    ff, _ = read_frames(fake)
    clean, _ = read_frames(TALKING_FACES / TINY_CLIP, 3)
    p = meta["peak"]
    lm = clean_lm = best(detector, clean[p]).landmarks
    inner = ellipse_mask(rf[p].shape, lm, 0.8)
    outer = ~ellipse_mask(rf[p].shape, lm, 1.6)

    def diff(a, b, m):
        return float(np.abs(a.astype(int) - b.astype(int))[m].mean())

    # Real: the hand hides the inner face. Fake: a face is pasted there, over the hand, and
    # the hand outside the tool's mask is the real clip's.
    assert diff(rf[p], clean[p], inner) > 15
    assert diff(ff[p], rf[p], inner) > 6
    assert diff(ff[p], rf[p], outer) < 4
    # The fake's face stays face-like where the real one is hidden.
    real_face, fake_face = best(detector, rf[p]), best(detector, ff[p])
    assert fake_face is not None and fake_face.score > 0.5
    eye = np.linalg.norm(clean_lm[1] - clean_lm[0])
    assert np.abs(fake_face.landmarks - clean_lm).max() < 0.3 * eye
    real_score = real_face.score if real_face is not None else 0.0
    real_shift = (np.abs(real_face.landmarks - clean_lm).max() / eye) if real_face is not None else np.inf
    assert real_score < fake_face.score - 0.02 or real_shift > 0.35


def test_draw_hand_returns_its_alpha_and_leaves_the_rest():
    rng = np.random.default_rng(3)
    frame = np.full((240, 320, 3), 90, np.uint8)
    out, alpha = draw_hand(frame, (160, 140), 60, 0.2, rng, velocity=(12, 0))
    assert alpha.shape == (240, 320) and alpha.max() > 0.99
    assert np.array_equal(out[alpha == 0], frame[alpha == 0])
    assert 0.3 < box_coverage(alpha, (130, 100, 190, 180)) <= 1.0
    edge = alpha[(alpha > 0.02) & (alpha < 0.98)]
    assert edge.size > 50                                           # soft, anti-aliased edge


def test_y4m_is_chromium_fake_capture_sized(tmp_path):
    frames = [np.full((288, 360, 3), v, np.uint8) for v in (30, 200)]
    path = write_y4m(frames, 25, tmp_path / "x.y4m", size=(640, 480))
    data = path.read_bytes()
    header, rest = data.split(b"\n", 1)
    assert header == b"YUV4MPEG2 W640 H480 F25:1 Ip A1:1 C420jpeg"
    frame_bytes = 640 * 480 * 3 // 2
    assert len(rest) == 2 * (len(b"FRAME\n") + frame_bytes)
    assert rest.startswith(b"FRAME\n")
