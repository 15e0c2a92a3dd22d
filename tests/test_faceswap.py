"""training/faceswap.py: cross-identity swaps used as an evaluation set (numpy + Pillow only)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from training.faceswap import (
    blend_mask,
    color_transfer,
    lab_to_rgb,
    rerender_face,
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

    from detector.faces import FaceDetector, retinaface_onnx_bytes
    from detector.runtime import make_session

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


def test_poisson_blend_solves_the_equation_exactly():
    """Inside the mask the result has the source's Laplacian, outside it is the target's bytes;
    a source that differs from the target by a constant comes out as the target itself."""
    from training.faceswap import _laplacian, poisson_blend

    rng = np.random.default_rng(0)
    tgt = rng.uniform(0, 255, (40, 52, 3))
    src = rng.uniform(0, 255, (40, 52, 3))
    mask = np.zeros((40, 52))
    mask[10:30, 12:40] = 1
    out = poisson_blend(src, tgt, mask, tol=1e-8)
    inner = (slice(10, 30), slice(12, 40))
    np.testing.assert_allclose(_laplacian(out)[inner], _laplacian(src)[inner], atol=1e-3)
    outside = mask == 0
    assert np.array_equal(out[outside], tgt[outside])
    np.testing.assert_allclose(poisson_blend(tgt + 37.0, tgt, mask, tol=1e-8), tgt, atol=1e-4)


def test_poisson_swap_has_no_colour_seam_and_keeps_the_background(pair):
    from training.faceswap import inner_face_ellipse, poisson_swap_face

    source, target = pair
    out = poisson_swap_face(source, SOURCE_LM, target, TARGET_LM)
    assert out.dtype == np.uint8 and out.shape == target.shape
    assert np.array_equal(out, poisson_swap_face(source, SOURCE_LM, target, TARGET_LM))
    diff = np.abs(out.astype(int) - target.astype(int)).sum(-1)
    assert diff[250:350, 250:350].mean() > 8, "the inner face changed"
    far = np.ones(diff.shape, bool)
    far[150:450, 150:450] = False
    assert diff[far].max() == 0
    # Smooth pictures: a dark striped source face onto a plain light target. The clone keeps the
    # stripes in the middle and meets the target's colour at the edge of the ellipse (no seam).
    src = np.full((300, 280, 3), (60, 40, 30), np.float64) + (40 * np.sin(np.arange(280) / 12.0))[None, :, None]
    tgt = np.full((560, 600, 3), (200, 160, 140), np.uint8)
    out = poisson_swap_face(np.clip(src, 0, 255).astype(np.uint8), SOURCE_LM, tgt, TARGET_LM).astype(int)
    pts = inner_face_ellipse(TARGET_LM)
    c = pts.mean(0)
    rim_in, rim_out = (np.rint(c + (pts - c) * f).astype(int) for f in (0.98, 1.02))
    jump = np.abs(out[rim_in[:, 1], rim_in[:, 0]] - out[rim_out[:, 1], rim_out[:, 0]]).mean()
    assert jump < 12, "no seam where the clone meets the target (a plain paste would jump by ~140)"
    middle = out[300, 270:330]
    assert middle.std(0).max() > 10, "the source's texture is kept inside"
    assert np.abs(middle.mean(0) - (200, 160, 140)).max() < 40, "and takes the target's colour"


def _sharpness(img: np.ndarray) -> float:
    g = img.astype(np.float64).mean(axis=2)
    return float(np.abs(np.diff(g, axis=1)).mean() + np.abs(np.diff(g, axis=0)).mean())


def test_rerendered_face_is_softer_than_the_picture_and_only_the_face_changes(pair):
    _, plain = pair
    grain = np.random.default_rng(5).normal(0, 20, plain.shape)  # pore-level detail a lower resolution loses
    target = np.clip(plain + grain, 0, 255).astype(np.uint8)
    # the same person re-rendered (reenactment): only resolution, smoothing and colour drift change
    out = rerender_face(target, TARGET_LM, target, TARGET_LM, factor=3.0, drift=(4.0, 2.0, -2.0))
    assert out.shape == target.shape and out.dtype == np.uint8
    assert np.array_equal(out, rerender_face(target, TARGET_LM, target, TARGET_LM, factor=3.0,
                                             drift=(4.0, 2.0, -2.0)))
    inner = (slice(270, 330), slice(270, 330))
    assert _sharpness(out[inner]) < 0.8 * _sharpness(target[inner])   # lower resolution inside
    assert out[inner].astype(float).mean() > target[inner].astype(float).mean()  # L drift +4
    changed = np.any(out != target, axis=2)
    assert changed[inner].all()
    assert not changed[:150].any() and not changed[:, :150].any() and not changed[-100:].any()  # background
