"""Self-Blended Images generator (training/sbi.py): pure numpy + Pillow, no torch needed."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from training import sbi


def _face(size: int = 256, seed: int = 0):
    """A synthetic face-like picture with a textured background, its box and 5 landmarks."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    d = ImageDraw.Draw(img)
    s = size / 256
    d.ellipse([78 * s, 60 * s, 178 * s, 200 * s], fill=(205, 160, 130))
    d.ellipse([100 * s, 105 * s, 118 * s, 115 * s], fill=(40, 30, 30))
    d.ellipse([138 * s, 105 * s, 156 * s, 115 * s], fill=(40, 30, 30))
    d.line([110 * s, 165 * s, 146 * s, 165 * s], fill=(150, 60, 60), width=3)
    box = np.array([80, 70, 176, 196], dtype=np.float32) * s
    lms = np.array([[109, 110], [147, 110], [128, 138], [112, 165], [144, 165]], dtype=np.float32) * s
    return np.asarray(img), box, lms


def test_mask_range_shape_and_location():
    img, box, lms = _face()
    m = sbi.blend_mask(img.shape[:2], box, lms, np.random.default_rng(1))
    assert m.shape == img.shape[:2] and m.dtype == np.float32
    assert m.min() >= 0.0 and m.max() <= 1.0
    assert m.max() == pytest.approx(1.0)
    # The inner face (between the eyes and the mouth) is inside; far corners are not.
    assert m[135, 128] > 0.5
    assert m[:20, :20].max() == 0 and m[-20:, -20:].max() == 0


@pytest.mark.parametrize("seed", range(8))
def test_blend_changes_pixels_only_inside_mask(seed):
    img, box, lms = _face(seed=seed)
    fake, m = sbi.self_blend(img, box, lms, np.random.default_rng(seed))
    assert fake.shape == img.shape and fake.dtype == np.uint8
    assert m.shape == img.shape[:2] and m.min() >= 0 and m.max() <= 1
    changed = np.any(fake != img, axis=2)
    assert changed.any(), "a self-blended image must differ from its source"
    assert not changed[m <= 0].any(), "pixels outside the blend mask must be untouched"
    # ... and the changed region lies within the (dilated) face hull, not elsewhere.
    ys, xs = np.nonzero(changed)
    x1, y1, x2, y2 = box
    fw, fh = x2 - x1, y2 - y1
    assert xs.min() >= x1 - 0.35 * fw and xs.max() <= x2 + 0.35 * fw
    assert ys.min() >= y1 - 0.35 * fh and ys.max() <= y2 + 0.35 * fh


def test_deterministic_given_seed():
    img, box, lms = _face()
    a, ma = sbi.self_blend(img, box, lms, np.random.default_rng(42))
    b, mb = sbi.self_blend(img, box, lms, np.random.default_rng(42))
    c, _ = sbi.self_blend(img, box, lms, np.random.default_rng(43))
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    assert not np.array_equal(a, c)


def test_blend_ratio_scales_mask():
    img, box, lms = _face()
    _, m_half = sbi.self_blend(img, box, lms, np.random.default_rng(5), ratio=0.5)
    _, m_full = sbi.self_blend(img, box, lms, np.random.default_rng(5), ratio=1.0)
    assert m_half.max() == pytest.approx(0.5, abs=1e-6)
    assert np.allclose(m_half * 2, m_full, atol=1e-6)


def test_rejects_non_uint8():
    img, box, lms = _face()
    with pytest.raises(ValueError):
        sbi.self_blend(img.astype(np.float32), box, lms, np.random.default_rng(0))


def test_convex_hull():
    pts = np.array([[0, 0], [2, 0], [2, 2], [0, 2], [1, 1], [1, 0]], dtype=float)
    hull = sbi.convex_hull(pts)
    assert {tuple(p) for p in hull.tolist()} == {(0, 0), (2, 0), (2, 2), (0, 2)}


def test_outline_follows_rotation():
    _img, _box, lms = _face()
    c = lms.mean(0)
    rot = np.array([[0, -1], [1, 0]], dtype=np.float32)  # 90 degrees
    pts = sbi.face_outline(np.array([-1e4, -1e4, 1e4, 1e4]), lms)
    pts_r = sbi.face_outline(np.array([-1e4, -1e4, 1e4, 1e4]), (lms - c) @ rot.T + c)
    assert np.allclose((pts - c) @ rot.T + c, pts_r, atol=1e-3)


def test_degrade_maps_box_and_landmarks():
    img, box, lms = _face()
    rng = np.random.default_rng(0)
    out, b, lm = sbi.degrade(img, box, lms, rng, jpeg_range=(50, 50), scale_range=(0.5, 0.5),
                             p_scale=1.0, p_jpeg=1.0)
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8
    assert np.allclose(b, box * 0.5) and np.allclose(lm, lms * 0.5)


def test_augment_shape_dtype_deterministic():
    img, _, _ = _face(size=192)
    a = sbi.augment(img, np.random.default_rng(3))
    b = sbi.augment(img, np.random.default_rng(3))
    assert a.shape == img.shape and a.dtype == np.uint8 and a.flags.c_contiguous
    assert np.array_equal(a, b)


def test_jpeg_roundtrip_changes_little():
    y, x = np.mgrid[0:128, 0:128]
    img = np.stack([x * 2, y * 2, (x + y)], axis=2).astype(np.uint8)  # smooth gradient
    out = sbi.jpeg(img, 95)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img.astype(int)).mean() < 3


@pytest.mark.parametrize("region", ["full", "lower", "inner"])
def test_every_mask_region_covers_the_inner_face_and_stays_near_the_box(region):
    img, box, lms = _face()
    m = sbi.blend_mask(img.shape[:2], box, lms, np.random.default_rng(2), region=region)
    assert m[138, 128] > 0.5, "the nose lies inside every region"
    ys, xs = np.nonzero(m)
    x1, y1, x2, y2 = box
    fw, fh = x2 - x1, y2 - y1
    assert xs.min() >= x1 - 0.35 * fw and xs.max() <= x2 + 0.35 * fw
    assert ys.min() >= y1 - 0.35 * fh and ys.max() <= y2 + 0.35 * fh


def test_mask_regions_differ_in_extent():
    img, box, lms = _face()
    area = {r: float((sbi.blend_mask(img.shape[:2], box, lms, np.random.default_rng(3), region=r) > 0.5).sum())
            for r in ("full", "lower", "inner")}
    assert area["inner"] < area["lower"] < area["full"]
    with pytest.raises(ValueError):
        sbi.face_outline(box, lms, region="forehead")


def test_face_geometry_ignores_position_scale_and_rotation():
    _img, _box, lms = _face()
    ang = 0.4
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    moved = (lms @ rot.T) * 1.7 + np.array([40.0, -12.0])
    assert np.allclose(sbi.face_geometry(lms), sbi.face_geometry(moved), atol=1e-6)
    other = lms.copy()
    other[3:, 1] += 20  # a longer face: mouth further from the eyes
    assert np.linalg.norm(sbi.face_geometry(other) - sbi.face_geometry(lms)) > 0.3


@pytest.mark.parametrize("seed", range(6))
def test_cross_blend_puts_the_donor_inside_the_mask_only(seed):
    img, box, lms = _face(seed=seed)
    donor, _, dlms = _face(size=320, seed=100 + seed)
    donor = np.ascontiguousarray(donor[:, ::-1])  # another "person": mirrored, other texture
    stripes = (50 * np.sin(np.arange(320) / 2.5))[None, :, None]  # skin texture no colour match flattens
    donor = np.clip(donor.astype(np.int16) + stripes, 0, 255).astype(np.uint8)
    dlms = dlms.copy()
    dlms[:, 0] = 319 - dlms[:, 0]
    dlms[[0, 1]], dlms[[3, 4]] = dlms[[1, 0]], dlms[[4, 3]]
    fake, m = sbi.cross_blend(img, box, lms, donor, dlms, np.random.default_rng(seed))
    assert fake.shape == img.shape and fake.dtype == np.uint8
    changed = np.any(fake != img, axis=2)
    assert changed.any()
    assert not changed[m <= 0].any(), "pixels outside the blend mask must be untouched"
    # Inside the solid part of the mask the picture moved towards the donor's texture.
    core = m >= m.max() * 0.99
    assert np.abs(fake[core].astype(int) - img[core].astype(int)).mean() > 5


@pytest.mark.parametrize("seed", range(4))
def test_a_clean_swap_replaces_the_face_fully_in_the_targets_colour_and_keeps_the_donors_texture(seed):
    img, box, lms = _face(seed=seed)
    donor, _, dlms = _face(size=320, seed=100 + seed)
    stripes = (50 * np.sin(np.arange(320) / 2.5))[None, :, None]  # the donor's own skin texture
    donor = np.clip(donor.astype(np.int16) + stripes - 60, 0, 255).astype(np.uint8)  # and darker skin
    fake, m = sbi.cross_blend(img, box, lms, donor, dlms, np.random.default_rng(seed), clean=True)
    assert float(m.max()) == 1.0, "a careful swap replaces the face fully (blend ratio 1)"
    changed = np.any(fake != img, axis=2)
    assert changed.any() and not changed[m <= 0].any(), "pixels outside the mask are the target's"
    core = m > 0.9
    # the donor's darker skin is matched to the target's in full (mean per channel) ...
    assert np.abs(fake[core].mean(0) - img[core].mean(0)).max() < 4
    # ... and its texture is neither blurred away nor flattened (no random blur on a clean swap)
    def ripple(a):
        return np.abs(np.diff(a.astype(np.float32), axis=1))[core[:, 1:]].mean()
    assert ripple(fake) > 2 * ripple(img)


def test_a_clean_swaps_donor_comes_from_the_targets_own_source():
    from training import data as D
    from training.views import Donors, make_view

    def record(i, folder):
        img, box, lms = _face(size=128, seed=i)
        return D.FaceRecord(img, box, lms, identity=f"{folder}-{i}", source=f"{folder}/{i}.jpg", frame=-1)

    recs = [record(i, "studio-a" if i % 2 else "street-b") for i in range(12)]
    donors = Donors(recs, same_source=0.0)  # plain draws look everywhere
    rng = np.random.default_rng(0)
    assert all(donors.pick(0, rng, same_source=True).source.startswith("street-b/") for _ in range(30))
    assert not all(donors.pick(0, rng).source.startswith("street-b/") for _ in range(30))
    # the training view passes it on: the same draw with and without `clean` gives other fakes
    views = [make_view(recs[0], np.random.default_rng(1), True, 64, 1.3, True, False, donor=recs[2], clean=c)
             for c in (False, True, True)]
    assert not np.array_equal(views[0], views[1]) and np.array_equal(views[1], views[2])


def test_h264_round_trip_keeps_the_picture_and_its_size():
    y, x = np.mgrid[0:101, 0:150]
    img = np.stack([x, y * 2, (x + y) // 2], axis=2).astype(np.uint8)  # odd height
    out = sbi.h264(img, 23)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img.astype(int)).mean() < 4
    rough = sbi.h264(img, 45)
    assert np.abs(rough.astype(int) - img.astype(int)).mean() >= np.abs(out.astype(int) - img.astype(int)).mean()


@pytest.mark.parametrize("codec", sorted(sbi.VIDEO_CODECS))
def test_every_video_codec_round_trips_and_its_quality_setting_works(codec):
    img, _, _ = _face(size=200)
    img = np.asarray(Image.fromarray(img).resize((161, 121)))  # odd width and height
    lo, hi = sbi.VIDEO_CODECS[codec]
    fine, rough = sbi.encode_frame(img, codec, lo), sbi.encode_frame(img, codec, hi)
    assert fine.shape == rough.shape == img.shape and fine.dtype == np.uint8
    err = [np.abs(x.astype(int) - img.astype(int)).mean() for x in (fine, rough)]
    assert 0 < err[0] < err[1] < 40, err  # the codec touched it, and its worst setting costs more


def test_a_video_still_has_a_video_face_and_is_the_same_for_the_same_draw():
    img, box, lms = _face(size=512)  # a 192 px face (wider than some draws, narrower than others)
    widths = []
    for seed in range(12):
        out, b, l2, (codec, q) = sbi.video_still(img, box, lms, np.random.default_rng(seed))
        w = float(b[2] - b[0])
        widths.append(w)
        assert sbi.VIDEO_FACE_PX[0] - 1 <= w <= box[2] - box[0] + 1e-3  # shrunk into the range, never up
        k = out.shape[1] / img.shape[1]
        np.testing.assert_allclose(b, box * k, rtol=0.02)
        np.testing.assert_allclose(l2, lms * k, rtol=0.02)
        lo, hi = sbi.VIDEO_CODECS[codec]
        assert lo <= q <= hi
        again = sbi.video_still(img, box, lms, np.random.default_rng(seed))
        assert np.array_equal(again[0], out) and again[3] == (codec, q)
        # a donor's frame made alike: the codec given is the codec used
        d = sbi.video_still(img, box, lms, np.random.default_rng(seed + 100), codec=("mpeg1video", 9))
        assert d[3] == ("mpeg1video", 9)
    assert max(widths) - min(widths) > 30  # the face width is drawn, not fixed


def test_degrade_as_a_video_frame():
    img, box, lms = _face()
    out, b, lm = sbi.degrade(img, box, lms, np.random.default_rng(0), p_scale=0.0, p_jpeg=0.0, p_video=1.0)
    assert out.shape == img.shape and np.array_equal(b, box) and np.array_equal(lm, lms)
    assert not np.array_equal(out, img)


def test_degrade_scales_relative_to_the_reference_and_never_up():
    img, box, lms = _face()
    # an image at half the reference size: a draw of 0.75 of the reference is 1.5x this one,
    # so it is left as it is; a draw of 0.25 is half of it
    out, b, _ = sbi.degrade(img, box, lms, np.random.default_rng(0), scale_range=(0.75, 0.75),
                            p_scale=1.0, p_jpeg=0.0, reference=0.5)
    assert out.shape == img.shape and np.allclose(b, box)
    out, b, _ = sbi.degrade(img, box, lms, np.random.default_rng(0), scale_range=(0.25, 0.25),
                            p_scale=1.0, p_jpeg=0.0, reference=0.5)
    assert out.shape == (128, 128, 3) and np.allclose(b, box * 0.5)


def test_degrade_to_a_small_face_lands_in_the_asked_width_and_never_scales_up():
    img, box, lms = _face()
    for seed in range(5):
        out, b, l2 = sbi.degrade(img, box, lms, np.random.default_rng(seed), p_jpeg=0.0, face_px=(24, 48))
        assert 24 <= b[2] - b[0] <= 48 + 1e-3 and out.shape[0] < img.shape[0]
        assert (l2[:, 0] >= b[0] - 1).all() and (l2[:, 0] <= b[2] + 1).all()  # the landmarks follow the box
    small = box * 0.2  # a face already 24-48 px stays as it is
    out, b, _ = sbi.degrade(img, small, lms * 0.2, np.random.default_rng(0), p_jpeg=0.0, face_px=(200, 300))
    assert out.shape == img.shape and np.allclose(b, small)


def test_augment_flips_aligned_maps_with_the_crop():
    img, _, _ = _face(size=64)
    marker = np.zeros((64, 64), np.uint8)
    marker[:, :8] = 255                                   # a band on the left edge
    flips = 0
    for seed in range(12):
        maps = [marker]
        out = sbi.augment(img, np.random.default_rng(seed), also=maps)
        assert np.array_equal(out, sbi.augment(img, np.random.default_rng(seed)))  # same crop either way
        flipped = maps[0][:, -1].all()
        assert flipped or maps[0][:, 0].all()
        flips += flipped
    assert 0 < flips < 12, "the flip is random: some seeds flip, some do not"


def test_xray_lights_the_blend_boundary_only():
    img, box, lms = _face()
    _fake, m = sbi.self_blend(img, box, lms, np.random.default_rng(5), ratio=0.5)
    b = sbi.pool(sbi.boundary(m), 16)
    assert b.shape == (16, 16) and b.dtype == np.float32 and 0 <= b.min() and b.max() <= 1
    assert b.max() > 0.2                                   # the boundary is there, whatever the ratio
    assert b[0, 0] == 0 and b[-1, -1] == 0                 # untouched corners are not boundary
    hard = np.zeros((64, 64), np.float32)
    hard[16:48, 16:48] = 1.0
    inside = sbi.pool(sbi.boundary(hard), 8)
    assert inside[3:5, 3:5].max() == 0                     # a solid inside is no boundary either
    assert not sbi.pool(sbi.boundary(np.zeros((32, 32), np.float32)), 8).any()  # real face: all zero


@pytest.mark.parametrize("kind", sbi.OCCLUDERS)
def test_occluder_covers_part_of_the_face_edge_and_nothing_else_changes(kind):
    img, box, lms = _face()
    texture = np.random.default_rng(9).integers(0, 255, (100, 140, 3), dtype=np.uint8)
    hits = 0
    for seed in range(6):
        alpha, fill = sbi.draw_occluder(img.shape[:2], lms, texture, np.random.default_rng(seed), kind=kind)
        assert alpha.shape == img.shape[:2] and fill.shape == img.shape and fill.dtype == np.uint8
        assert 0 <= alpha.min() and alpha.max() <= 1 and alpha.max() > 0.5
        x1, y1, x2, y2 = (int(v) for v in box)
        face = alpha[y1:y2, x1:x2]
        assert face.mean() < 0.8, "an occluder hides part of a face, not all of it"
        hits += face.max() > 0.5          # most occluders reach into the face box
        out = sbi.occlude(img, (alpha, fill))
        assert np.array_equal(out[alpha == 0], img[alpha == 0])
        again = sbi.draw_occluder(img.shape[:2], lms, texture, np.random.default_rng(seed), kind=kind)
        assert np.array_equal(again[0], alpha) and np.array_equal(again[1], fill)  # seeded
    assert hits >= 4


@pytest.mark.parametrize("seed", range(4))
def test_lowres_fake_is_softer_inside_the_mask_and_leaves_the_rest(seed):
    img, box, lms = _face(seed=seed)
    texture = np.random.default_rng(seed).integers(0, 255, img.shape, dtype=np.uint8)
    img = np.where(sbi.blend_mask(img.shape[:2], box, lms, np.random.default_rng(99))[..., None] > 0,
                   (img * 0.5 + texture * 0.5).astype(np.uint8), img)  # detail the re-render can lose
    soft, m2 = sbi.self_blend(img, box, lms, np.random.default_rng(seed), ratio=1.0, lowres=True)
    assert not np.any(soft != img, axis=2)[m2 <= 0].any()
    inside = m2 > 0.99
    def detail(a):
        return float(np.abs(np.diff(a.astype(np.float64).mean(axis=2), axis=1))[inside[:, 1:]].mean())
    assert detail(soft) < detail(img)


def test_rerender_keeps_a_small_face_at_its_resolution():
    img, _, _ = _face(size=64)
    out = sbi.rerender(img, 30.0, np.random.default_rng(0))  # a 30 px face cannot go below 40 px
    assert np.array_equal(out, img)


@pytest.fixture(params=["opencv", "numpy"])
def solver(request, monkeypatch):
    """gradient_blend with OpenCV's seamlessClone, and with the numpy membrane the GPU machine uses
    (no cv2 there: an import of a module set to None in sys.modules raises ImportError)."""
    if request.param == "numpy":
        monkeypatch.setitem(sys.modules, "cv2", None)
    return request.param


def test_gradient_blend_keeps_the_source_in_place_and_the_target_outside(solver):
    """OpenCV places the clone by its mask's bounding box: a misplaced clone would shift the face.
    A clone of the picture into itself gives the picture back; a clone of a copy shifted by 3 px
    carries the shifted texture inside the mask and leaves the outside alone."""
    _, box, lms = _face(seed=3)
    img = np.random.default_rng(3).integers(0, 255, (256, 256, 3), dtype=np.uint8)  # texture everywhere
    mask = sbi.blend_mask(img.shape[:2], box, lms, np.random.default_rng(3))
    same = sbi.gradient_blend(img, img, mask, np.random.default_rng(0))
    assert np.abs(same.astype(int) - img.astype(int)).max() <= 2
    shifted = np.ascontiguousarray(np.roll(img, 3, axis=1))
    out = sbi.gradient_blend(shifted, img, mask, np.random.default_rng(0))
    core = mask >= 0.99
    to_src = np.abs(out[core].astype(int) - shifted[core].astype(int)).mean()
    to_tgt = np.abs(out[core].astype(int) - img[core].astype(int)).mean()
    assert to_src < 0.5 * to_tgt
    assert np.array_equal(out[mask <= 0], img[mask <= 0])


def test_gradient_blend_leaves_no_colour_seam(solver):
    """A source of another colour is pasted with its texture but the target's colour at the edge:
    the step across the mask's edge is far smaller than an alpha paste's."""
    img, box, lms = _face(seed=4)
    mask = sbi.blend_mask(img.shape[:2], box, lms, np.random.default_rng(4))
    hard = (mask > 0.5).astype(np.float32)
    tinted = np.clip(img.astype(int) + np.array([60, -40, 30]), 0, 255).astype(np.uint8)
    pasted = sbi.gradient_blend(tinted, img, hard, np.random.default_rng(1))
    alpha = (img * (1 - hard[..., None]) + tinted * hard[..., None]).astype(np.uint8)
    ring = (hard > 0) & ~(np.pad(hard, 2)[4:, 2:-2] * np.pad(hard, 2)[:-4, 2:-2]
                          * np.pad(hard, 2)[2:-2, 4:] * np.pad(hard, 2)[2:-2, :-4] > 0)
    def shift_at_edge(x):
        return np.abs(x[ring].astype(int) - img[ring].astype(int)).mean(0)
    assert (shift_at_edge(pasted) < 0.5 * shift_at_edge(alpha)).all()


@pytest.mark.parametrize("seed", range(4))
def test_seamless_blends_change_pixels_only_inside_mask(seed, solver):
    img, box, lms = _face(seed=seed)
    fake, m = sbi.self_blend(img, box, lms, np.random.default_rng(seed), seamless=True)
    changed = np.any(fake != img, axis=2)
    assert changed.any() and not changed[m <= 0].any()
    donor, _, dlms = _face(size=320, seed=200 + seed)
    fake, m = sbi.cross_blend(img, box, lms, donor, dlms, np.random.default_rng(seed), seamless=True)
    changed = np.any(fake != img, axis=2)
    assert changed.any() and not changed[m <= 0].any()


def _laplace_direct(values: np.ndarray, unknown: np.ndarray) -> np.ndarray:
    """The 4-neighbour Laplace equation inside `unknown` (clear of the border), solved directly."""
    ys, xs = np.nonzero(unknown)
    index = {(y, x): k for k, (y, x) in enumerate(zip(ys, xs))}
    a = np.zeros((len(ys), len(ys)))
    b = np.zeros((len(ys), values.shape[2]))
    for k, (y, x) in enumerate(zip(ys, xs)):
        a[k, k] = 4.0
        for yy, xx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
            if (yy, xx) in index:
                a[k, index[yy, xx]] = -1.0
            else:
                b[k] += values[yy, xx]
    out = values.astype(np.float64).copy()
    out[ys, xs] = np.linalg.solve(a, b)
    return out


def test_harmonic_fill_solves_laplaces_equation():
    """The coarse-to-fine fill is the harmonic interpolation: within half a grey level of a
    direct solve (rounding to whole grey levels hides the rest), on a blob-shaped hole in noise
    (no smooth guess would come close)."""
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 255, (40, 48, 3)).astype(np.float32)
    yy, xx = np.mgrid[:40, :48]
    hole = ((yy - 19) / 14.0) ** 2 + ((xx - 23) / 18.0) ** 2 + 0.2 * np.sin(xx / 3.0) < 1
    exact = _laplace_direct(values, hole)
    filled = sbi.harmonic_fill(values, hole)
    assert np.array_equal(filled[~hole], values[~hole])
    assert np.abs(filled - exact)[hole].max() < 0.5
    assert np.abs(values - exact)[hole].mean() > 30  # the hole's own noise is far from it


def test_membrane_clone_keeps_the_source_texture_and_meets_the_target_at_the_edge():
    """NORMAL_CLONE's definition: inside the mask the result minus the source is harmonic (the
    source's gradients are kept), and outside it is the target."""
    img, box, lms = _face(size=96, seed=5)
    hard = sbi.blend_mask(img.shape[:2], box, lms, np.random.default_rng(5)) > 0.5
    source = np.clip(np.roll(img, 2, axis=0).astype(int) + np.array([50, -30, 20]), 0, 255).astype(np.uint8)
    out = sbi.membrane_clone(source, img, hard)
    assert np.array_equal(out[~hard], img[~hard].astype(np.float32))
    exact = _laplace_direct(img.astype(np.float64) - source, hard) + source
    assert np.abs(out - exact)[hard].max() < 0.5
