"""training/faceswap.py: cross-identity swaps used as an evaluation set (numpy + Pillow only)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from training.faceswap import (
    blend_mask,
    color_transfer,
    lab_to_rgb,
    rgb_to_lab,
    similarity_transform,
    swap_face,
    swap_images,
)

TARGET_LM = np.array([[260, 250], [340, 250], [300, 300], [268, 345], [332, 345]], dtype=float)
SOURCE_LM = np.array([[110, 120], [170, 116], [142, 160], [118, 196], [166, 193]], dtype=float)


def drawn_face(size, landmarks, skin, seed) -> np.ndarray:
    """A textured background with a skin ellipse, eyes and mouth where the landmarks say."""
    w, h = size
    rng = np.random.default_rng(seed)
    bg = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    im = Image.fromarray(bg)
    d = ImageDraw.Draw(im)
    lm = np.asarray(landmarks)
    cx, cy = lm[:, 0].mean(), lm[:, 1].mean()
    rx, ry = (lm[1, 0] - lm[0, 0]) * 1.2, (lm[3, 1] - lm[0, 1]) * 1.6
    d.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=skin)
    for x, y in lm[:2]:
        d.ellipse((x - 8, y - 5, x + 8, y + 5), fill=(30, 30, 40))
    d.line([tuple(lm[3]), tuple(lm[4])], fill=(150, 40, 50), width=6)
    return np.asarray(im)


@pytest.fixture(scope="module")
def pair():
    source = drawn_face((280, 300), SOURCE_LM, (120, 80, 60), seed=1).astype(np.int16)
    # Skin texture (stripes) that colour transfer cannot flatten into the target's plain skin.
    source = np.clip(source + (40 * np.sin(np.arange(280) / 3.0))[None, :, None], 0, 255).astype(np.uint8)
    target = drawn_face((600, 560), TARGET_LM, (230, 190, 170), seed=2)
    return source, target


def test_similarity_transform_recovers_a_known_rotation_scale_and_shift():
    ang, scale, t = 0.3, 1.7, np.array([12.0, -5.0])
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    dst = SOURCE_LM @ (scale * rot).T + t
    m = similarity_transform(SOURCE_LM, dst)
    np.testing.assert_allclose(m[:, :2], scale * rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-7)


def test_lab_round_trip_and_reference_white():
    rgb = np.random.default_rng(0).integers(0, 256, size=(16, 16, 3)).astype(np.float64)
    np.testing.assert_allclose(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=1e-6)
    np.testing.assert_allclose(rgb_to_lab(np.array([255.0, 255.0, 255.0])), [100, 0, 0], atol=1e-3)


def test_color_transfer_matches_the_target_mean_inside_the_weight():
    rng = np.random.default_rng(3)
    src = np.clip(rng.normal((90, 60, 50), 10, size=(40, 40, 3)), 0, 255)
    dst = np.clip(rng.normal((200, 170, 150), 12, size=(40, 40, 3)), 0, 255)
    out = color_transfer(src, dst, np.ones((40, 40), np.float32))
    np.testing.assert_allclose(rgb_to_lab(out).mean((0, 1)), rgb_to_lab(dst).mean((0, 1)), atol=0.5)


def test_swap_is_deterministic(pair):
    source, target = pair
    a = swap_face(source, SOURCE_LM, target, TARGET_LM)
    b = swap_face(source, SOURCE_LM, target, TARGET_LM)
    assert a.dtype == np.uint8 and a.shape == target.shape
    assert np.array_equal(a, b)


def test_swap_changes_the_inner_face_and_leaves_the_far_background_untouched(pair):
    source, target = pair
    out = swap_face(source, SOURCE_LM, target, TARGET_LM)
    diff = np.abs(out.astype(int) - target.astype(int)).sum(-1)
    # The source's eyes land on the target's eyes: the area between and below them changes.
    x0, y0, x1, y1 = 250, 240, 350, 350
    assert diff[y0:y1, x0:x1].mean() > 8
    assert (diff[y0:y1, x0:x1] > 0).mean() > 0.5
    # Everything outside the mask keeps the target's exact bytes.
    mask = blend_mask((target.shape[1], target.shape[0]), TARGET_LM)
    assert np.array_equal(out[mask == 0], target[mask == 0])
    assert (mask == 0).mean() > 0.8
    far = np.ones(diff.shape, bool)
    far[150:450, 150:450] = False
    assert diff[far].max() == 0


def test_blend_mask_is_solid_inside_and_feathered_at_the_edge():
    m = blend_mask((600, 560), TARGET_LM)
    assert m[300, 300] == pytest.approx(1.0)
    assert m.min() == 0.0
    edge = m[(m > 0) & (m < 1)]
    assert edge.size > 100


def test_swap_between_two_real_people_keeps_a_detectable_face():
    from mediagen import face_photo_paths

    from workers.detector.faces import FaceDetector, retinaface_onnx_bytes
    from workers.detector.runtime import make_session

    paths = face_photo_paths(2)
    session, _ = make_session(retinaface_onnx_bytes(), "cpu")
    fd = FaceDetector(session)
    small = [np.asarray(Image.open(p).convert("RGB").resize((540, 540))) for p in paths]
    out = swap_images(fd, small[0], small[1])
    assert out is not None and out.shape == small[1].shape
    faces = fd.detect(out)
    assert len(faces) == 1
    before = max(fd.detect(small[1]), key=lambda f: f.width * f.height)
    assert np.abs(faces[0].box - before.box).max() < 0.1 * before.width
    x1, y1, x2, y2 = (int(v) for v in before.box)
    inner = np.abs(out[y1:y2, x1:x2].astype(int) - small[1][y1:y2, x1:x2].astype(int))
    assert inner.mean() > 3
    assert np.array_equal(out[:20], small[1][:20])
