"""Self-Blended Images (Shiohara & Yamasaki, CVPR 2022) in numpy + Pillow.

A pseudo-fake is a real face blended with a slightly altered copy of itself inside a deformed
face mask: the classifier has to learn the generic traces of a face swap (a blending boundary,
a colour or sharpness mismatch, a small misalignment of the inner face) instead of the
artefacts of one particular generator.

No torch here: this module is unit-tested in the runtime venv (tests/test_sbi.py).

Landmarks are the RetinaFace 5 points in image coordinates, in the order the runtime detector
gives them: right eye, left eye, nose, right mouth corner, left mouth corner.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)
"""Blend ratios drawn uniformly, as in the paper (full blends are the most common)."""


# --- mask -----------------------------------------------------------------------------------

def convex_hull(points: np.ndarray) -> np.ndarray:
    """Convex hull (Andrew's monotone chain) of N x 2 points, counter-clockwise, no repeats."""
    pts = sorted(set(map(tuple, np.asarray(points, dtype=np.float64).tolist())))
    if len(pts) <= 2:
        return np.asarray(pts)

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.asarray(lower[:-1] + upper[:-1])


REGIONS = ("full", "full", "lower", "inner")
"""Mask regions drawn uniformly per fake (the SBI paper draws among several landmark hulls too):
the whole inner face twice as often as the lower face (eyes to chin: a mouth/jaw reenactment) or
the inner components (eyes, nose and mouth only: a partial swap)."""


def face_outline(box, landmarks, rng: np.random.Generator | None = None,
                 region: str = "full") -> np.ndarray:
    """Points around a face region from the 5 landmarks.

    region "full": brows to chin, temple to temple; "lower": from just above the eyes down to the
    chin; "inner": a tight hull around the eyes, nose and mouth.
    The points are extrapolated along the face's own axes (eye line and eyes-to-mouth), so
    they follow a tilted or rotated face; with rng each extrapolation factor is jittered.
    The outline is clipped to the face box grown by 10%.
    """
    lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    reye, leye, nose, rmouth, lmouth = lm
    eyes = (reye + leye) / 2
    mouth = (rmouth + lmouth) / 2
    across = leye - reye                      # eye line, right eye -> left eye
    down = mouth - eyes                       # eyes -> mouth
    if np.linalg.norm(across) < 1e-6 or np.linalg.norm(down) < 1e-6:
        x1, y1, x2, y2 = (float(v) for v in box)
        return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])

    def j(v: float) -> float:
        return v if rng is None else v * rng.uniform(0.85, 1.15)

    if region == "full":
        pts = [
            reye - across * j(0.45) - down * j(0.55),   # above the outer right brow
            leye + across * j(0.45) - down * j(0.55),   # above the outer left brow
            eyes - down * j(0.75),                      # brow centre / lower forehead
            reye - across * j(0.55) + down * j(0.15),   # right temple
            leye + across * j(0.55) + down * j(0.15),   # left temple
            rmouth - across * j(0.45) + down * j(0.0),  # right cheek
            lmouth + across * j(0.45) + down * j(0.0),  # left cheek
            rmouth - across * j(0.2) + down * j(0.45),  # right jaw
            lmouth + across * j(0.2) + down * j(0.45),  # left jaw
            mouth + down * j(0.75),                     # chin
            nose,
        ]
    elif region == "lower":
        pts = [
            reye - across * j(0.5) - down * j(0.2),     # just above the right eye, outside
            leye + across * j(0.5) - down * j(0.2),
            reye - across * j(0.55) + down * j(0.3),    # right cheekbone
            leye + across * j(0.55) + down * j(0.3),
            rmouth - across * j(0.4) + down * j(0.1),   # right cheek
            lmouth + across * j(0.4) + down * j(0.1),
            rmouth - across * j(0.15) + down * j(0.45),  # jaw
            lmouth + across * j(0.15) + down * j(0.45),
            mouth + down * j(0.7),                      # chin
        ]
    elif region == "inner":
        pts = [
            reye - across * j(0.3) - down * j(0.3),     # above and outside the eyes
            leye + across * j(0.3) - down * j(0.3),
            reye - across * j(0.3) + down * j(0.2),     # below and outside the eyes
            leye + across * j(0.3) + down * j(0.2),
            rmouth - across * j(0.2) + down * j(0.05),  # outside the mouth corners
            lmouth + across * j(0.2) + down * j(0.05),
            mouth + down * j(0.3),                      # below the lower lip
            nose,
        ]
    else:
        raise ValueError(f"unknown mask region {region!r}")
    pts = np.asarray(pts)
    x1, y1, x2, y2 = (float(v) for v in box)
    gw, gh = 0.1 * (x2 - x1), 0.1 * (y2 - y1)
    pts[:, 0] = np.clip(pts[:, 0], x1 - gw, x2 + gw)
    pts[:, 1] = np.clip(pts[:, 1], y1 - gh, y2 + gh)
    return pts


def _odd(n: float) -> int:
    n = max(3, round(n))
    return n if n % 2 else n + 1


def blend_mask(shape: tuple[int, int], box, landmarks, rng: np.random.Generator,
               work_scale: float = 0.5, region: str | None = None) -> np.ndarray:
    """A random soft face mask, float32 (H, W) in [0, 1].

    The region (see REGIONS) is drawn at random unless given. Convex hull of the jittered outline -> random elastic wobble of the hull vertices and a
    small random affine -> random erosion or dilation -> Gaussian blur of random size.
    The mask is drawn at `work_scale` of the image size (it is smooth) and resized up.
    """
    h, w = shape
    sc = float(work_scale)
    sh, sw = max(8, round(h * sc)), max(8, round(w * sc))
    if region is None:
        region = REGIONS[int(rng.integers(0, len(REGIONS)))]
    pts = face_outline(box, landmarks, rng, region) * sc
    hull = convex_hull(pts)
    face = max(float(box[2]) - float(box[0]), float(box[3]) - float(box[1]), 1.0) * sc
    # Elastic-like deformation: densify the hull and push each vertex by smooth random noise.
    dense = []
    for a, b in zip(hull, np.roll(hull, -1, axis=0)):
        for t in np.linspace(0, 1, 6, endpoint=False):
            dense.append(a + (b - a) * t)
    dense = np.asarray(dense)
    n = len(dense)
    noise = rng.normal(0, 1, size=(n, 2))
    k = np.array([1, 4, 6, 4, 1], dtype=np.float64) / 16
    for _ in range(2):  # circular smoothing: neighbouring vertices move together
        noise = sum(k[i] * np.roll(noise, i - 2, axis=0) for i in range(5))
    dense = dense + noise * face * rng.uniform(0.0, 0.06)
    # Small random affine about the face centre.
    c = dense.mean(0)
    ang = rng.uniform(-0.08, 0.08)
    sx, sy = rng.uniform(0.9, 1.08, size=2)
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    dense = (dense - c) @ (rot * np.array([sx, sy])).T + c + rng.uniform(-0.03, 0.03, 2) * face

    img = Image.new("L", (sw, sh), 0)
    ImageDraw.Draw(img).polygon([tuple(p) for p in dense.tolist()], fill=255)
    # Random erosion / dilation (blur, then threshold below or above the middle).
    op = rng.integers(0, 3)
    if op:
        soft = np.asarray(img.filter(ImageFilter.GaussianBlur(face * rng.uniform(0.01, 0.04))))
        cut = rng.uniform(150, 220) if op == 1 else rng.uniform(35, 105)
        img = Image.fromarray(np.where(soft >= cut, 255, 0).astype(np.uint8))
    # Gaussian blur of random size; then renormalise so the inner face stays at 1.
    radius = face * rng.uniform(0.01, 0.08)
    small = img.filter(ImageFilter.GaussianBlur(radius))
    m = np.asarray(small.resize((w, h), Image.BILINEAR), dtype=np.float32) / 255.0
    peak = float(m.max())
    if peak > 0:
        m = np.clip(m / peak, 0.0, 1.0)
    m[m < 2.0 / 255.0] = 0.0  # no invisible tails: the blend region is where the mask shows
    return m


# --- source-target augmentation -------------------------------------------------------------

def _color_jitter(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32)
    arr = arr + rng.uniform(-20, 20, size=3)                                   # RGB shift
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    hsv = np.asarray(img.convert("HSV"), dtype=np.int16).copy()                # HSV shift
    hsv[..., 0] = (hsv[..., 0] + rng.integers(-8, 9)) % 256
    hsv[..., 1] = np.clip(hsv[..., 1] + rng.integers(-25, 26), 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] + rng.integers(-15, 16), 0, 255)
    img = Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.9, 1.1))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.9, 1.1))
    return img


def _sharpness(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    r = rng.random()
    if r < 0.35:
        return img.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.6)))
    if r < 0.7:
        return img.filter(ImageFilter.UnsharpMask(radius=rng.uniform(1, 3),
                                                  percent=int(rng.uniform(50, 150)), threshold=0))
    return img


def _shift_scale(img: Image.Image, box, rng: np.random.Generator) -> Image.Image:
    """Small random scale and translation about the face centre (the 'misaligned' swap)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    face = max(x2 - x1, y2 - y1, 1.0)
    s = rng.uniform(0.95, 1.05)
    sy = s * rng.uniform(0.97, 1.03)
    tx, ty = rng.uniform(-0.03, 0.03, size=2) * face
    # output (u, v) -> input: centre + ((u, v) - centre - t) / s
    a, e = 1 / s, 1 / sy
    c = cx - a * (cx + tx)
    f = cy - e * (cy + ty)
    return img.transform(img.size, Image.AFFINE, (a, 0, c, 0, e, f), resample=Image.BILINEAR)


def rerender(image: np.ndarray, face_size: float, rng: np.random.Generator) -> np.ndarray:
    """The face as a generator would hand it back: rendered at a lower resolution than the
    picture (a reenactment or live face-swap tool draws a 256-512 px face and pastes it into a
    larger frame), a little smoothed at that resolution, then scaled back up. The face keeps at
    least 40 px across at the low resolution."""
    h, w = image.shape[:2]
    factor = float(rng.uniform(1.6, 4.0))
    factor = max(1.0, min(factor, face_size / 40.0))
    if factor <= 1.05:
        return image
    small = Image.fromarray(image).resize((max(8, round(w / factor)), max(8, round(h / factor))),
                                         Image.BILINEAR, reducing_gap=2.0)
    if rng.random() < 0.6:
        small = small.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    return np.asarray(small.resize((w, h), Image.BICUBIC))


SOR_OMEGA = 1.8
"""Over-relaxation of harmonic_fill's sweeps (1 is plain Gauss-Seidel; anything below 2 converges)."""


def harmonic_fill(values: np.ndarray, unknown: np.ndarray, sweeps: int = 30) -> np.ndarray:
    """values (H, W, C) float32, kept where `unknown` (H, W) is False; inside it, the harmonic
    interpolation of the values around it (Laplace's equation on the 4-neighbour grid, the picture's
    edge reflecting). Coarse to fine: the hole is filled on a half-size grid first, then
    over-relaxed Gauss-Seidel sweeps at this size take out what the coarse grid could not hold
    (tests/test_sbi.py: within half a grey level of a direct solve on small holes; on a
    10,000-pixel face mask 0.5 on average, 1.8 at most). Without a known value the result is 0."""
    out = values.astype(np.float32, copy=True)
    if not unknown.any():
        return out
    known = ~unknown
    if not known.any():
        return np.zeros_like(out)
    h, w = unknown.shape
    if min(h, w) > 4:
        ph, pw = h % 2, w % 2
        kv = np.pad(np.where(known[..., None], out, 0.0), ((0, ph), (0, pw), (0, 0)))
        kn = np.pad(known, ((0, ph), (0, pw))).astype(np.float32)
        total = kv[0::2, 0::2] + kv[1::2, 0::2] + kv[0::2, 1::2] + kv[1::2, 1::2]
        count = kn[0::2, 0::2] + kn[1::2, 0::2] + kn[0::2, 1::2] + kn[1::2, 1::2]
        coarse = harmonic_fill(total / np.maximum(count, 1.0)[..., None], count == 0, sweeps=sweeps)
        guess = np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)[:h, :w]
    else:
        guess = np.broadcast_to(out[known].mean(axis=0), out.shape)
    out = np.where(unknown[..., None], guess, out).astype(np.float32)
    # red-black successive over-relaxation: each sweep updates the two checkerboard halves in
    # turn, each from the other's newest values
    red = ((np.arange(h)[:, None] + np.arange(w)[None, :]) % 2 == 0)
    halves = [(unknown & red)[..., None], (unknown & ~red)[..., None]]
    for _ in range(sweeps):
        for half in halves:
            p = np.pad(out, ((1, 1), (1, 1), (0, 0)), mode="edge")
            mean = 0.25 * (p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:])
            out = np.where(half, out + SOR_OMEGA * (mean - out), out)
    return out


def membrane_clone(source: np.ndarray, target: np.ndarray, hard: np.ndarray) -> np.ndarray:
    """OpenCV's NORMAL_CLONE without OpenCV: inside `hard` (H, W) bool the source plus the harmonic
    membrane that takes it to the target at the mask's edge (Pérez et al. 2003: the Poisson
    solution with the source's gradients is the source plus a harmonic correction; Farbman et al.
    2009). Solved on the mask's bounding box only. Returns float32 (H, W, 3); outside `hard` it is
    the target.

    It solves the same equation as the evaluation's `training.faceswap.poisson_blend` and is kept
    apart from it on purpose: training imports nothing of the generator its held-out Poisson
    fakes come from, so a fix or a quirk of one solver never reaches both sides of the evaluation."""
    out = target.astype(np.float32)
    if not hard.any():
        return out
    ys, xs = np.nonzero(hard)
    y0, y1 = max(int(ys.min()) - 2, 0), min(int(ys.max()) + 3, hard.shape[0])
    x0, x1 = max(int(xs.min()) - 2, 0), min(int(xs.max()) + 3, hard.shape[1])
    src = source[y0:y1, x0:x1].astype(np.float32)
    inside = hard[y0:y1, x0:x1]
    membrane = harmonic_fill(out[y0:y1, x0:x1] - src, inside)
    out[y0:y1, x0:x1] = np.where(inside[..., None], src + membrane, out[y0:y1, x0:x1])
    return out


def gradient_blend(source: np.ndarray, target: np.ndarray, mask: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """source pasted into target in the gradient domain (OpenCV's seamlessClone, Pérez et al.
    2003): inside the mask the result keeps the source's gradients and meets the target at the
    mask's edge, so there is no colour seam, only the texture and sharpness change that a
    face-swap tool's "seamless" paste leaves. NORMAL_CLONE mostly, MIXED_CLONE (the stronger of
    the two gradients) a fifth of the time. source, target: uint8 (H, W, 3) of one size; mask
    float (H, W) in [0, 1]. Returns uint8 (H, W, 3); where mask is 0 the pixel is the target's.

    Where OpenCV is not installed (the lent GPU machine has torch and timm only) `membrane_clone`
    does the NORMAL_CLONE in numpy, and the MIXED_CLONE fifth is a NORMAL_CLONE too. The two are
    not the same picture: the numpy one is the equation's solution inside the mask, and OpenCV's
    lands elsewhere (on a London face with a tinted, shifted source, 31 grey levels apart on
    average inside the mask). Both keep the source's texture with no colour seam at the edge.

    OpenCV's solver, not the evaluation's own `training.faceswap.seamless_clone`: the model is
    not trained on the evaluation's generator. The numpy fallback is another solver of the same
    equation as that one (conjugate gradients there, over-relaxed sweeps here), on other masks
    and sources: without OpenCV the separation is in the masks and faces, not in the maths."""
    hard = mask > 0.5
    if not hard.any():
        return target.copy()
    mixed = rng.random() < 0.2
    try:
        import cv2
    except ImportError:
        cloned = membrane_clone(source, target, hard)
    else:
        pad = 16  # seamlessClone wants the mask clear of the image border
        src = cv2.copyMakeBorder(source, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
        dst = cv2.copyMakeBorder(target, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
        m = cv2.copyMakeBorder(hard.astype(np.uint8) * 255, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        # seamlessClone centres the mask's bounding box on `center` (x + w // 2, y + h // 2 keeps
        # the source where it was; tests/test_sbi.py checks the alignment).
        x, y, w, h = cv2.boundingRect(m)
        flag = cv2.MIXED_CLONE if mixed else cv2.NORMAL_CLONE
        cloned = cv2.seamlessClone(src, dst, m, (x + w // 2, y + h // 2), flag)
        cloned = cloned[pad:-pad, pad:-pad].astype(np.float32)
    a = mask.astype(np.float32)[..., None]  # the soft mask's feather on top of the clone's edge
    out = target.astype(np.float32) * (1 - a) + cloned * a
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def source_target(image: np.ndarray, box, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(source, target): one of the two is a colour/sharpness/geometry-altered copy."""
    pil = Image.fromarray(image)
    alt = pil
    if rng.random() < 0.9:
        alt = _color_jitter(alt, rng)
    alt = _sharpness(alt, rng)
    if rng.random() < 0.8:
        alt = _shift_scale(alt, box, rng)
    alt_arr = np.asarray(alt)
    if rng.random() < 0.5:
        return alt_arr, image
    return image, alt_arr


def self_blend(image: np.ndarray, box, landmarks, rng: np.random.Generator,
               ratio: float | None = None, lowres: bool = False,
               seamless: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One Self-Blended Image: (fake uint8 like image, effective mask float32 (H, W) in [0,1]).
    With `lowres` the blended-in source is re-rendered at a lower resolution first (`rerender`).
    With `seamless` the source is pasted in the gradient domain (`gradient_blend`) before the
    alpha blend, so the colour seam is gone and only the texture change is left.

    fake = target * (1 - r*mask) + source * r*mask. Where the returned mask is 0 the pixel is
    exactly the input pixel; a pixel can change only where the mask is > 0.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError("self_blend expects an RGB uint8 array (H, W, 3)")
    mask = blend_mask(image.shape[:2], box, landmarks, rng)
    r = float(rng.choice(BLEND_RATIOS)) if ratio is None else float(ratio)
    out = image.copy()
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return out, mask
    h, w = mask.shape
    y0, y1 = max(0, ys.min() - 8), min(h, ys.max() + 9)
    x0, x1 = max(0, xs.min() - 8), min(w, xs.max() + 9)
    region = np.ascontiguousarray(image[y0:y1, x0:x1])
    rbox = np.asarray(box, dtype=np.float64) - np.array([x0, y0, x0, y0])
    source, target = source_target(region, rbox, rng)
    if lowres:
        source = rerender(source, max(rbox[2] - rbox[0], rbox[3] - rbox[1]), rng)
    if seamless:
        source = gradient_blend(source, target, mask[y0:y1, x0:x1], rng)
    m = (mask[y0:y1, x0:x1] * r)[..., None]
    blended = target.astype(np.float32) * (1 - m) + source.astype(np.float32) * m
    blended = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    # The target may itself be the altered copy: outside the mask keep the original pixels.
    outside = m[..., 0] <= 0
    blended[outside] = region[outside]
    out[y0:y1, x0:x1] = blended
    m = mask * r
    return out, m.astype(np.float32)


def face_geometry(landmarks) -> np.ndarray:
    """The 5 landmarks in the face's own frame (eye centre at 0, eye line along x, eye distance
    1), flattened: faces with close vectors have a similar pose and shape (donor choice)."""
    lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    eyes = (lm[0] + lm[1]) / 2
    across = lm[1] - lm[0]
    d = max(float(np.linalg.norm(across)), 1e-6)
    c, s = across / d
    rot = np.array([[c, s], [-s, c]])
    return (((lm - eyes) @ rot.T) / d).reshape(-1)


def _match_colour(source: np.ndarray, target: np.ndarray, weight: np.ndarray, rng,
                  full: bool = False) -> np.ndarray:
    """Per-channel RGB mean (and sometimes spread) of source moved towards the target's inside
    the weight. RGB, partial and random on purpose (the evaluation swap uses full CIELAB);
    `full`: mean and spread moved all the way (no random draw)."""
    w = weight[..., None].astype(np.float32)
    total = max(float(w.sum()), 1e-6)
    mu_s = (source * w).sum((0, 1)) / total
    mu_t = (target * w).sum((0, 1)) / total
    k = 1.0 if full else rng.uniform(0.5, 1.0)
    if full or rng.random() < 0.5:
        sd_s = np.sqrt(((source - mu_s) ** 2 * w).sum((0, 1)) / total) + 1e-3
        sd_t = np.sqrt(((target - mu_t) ** 2 * w).sum((0, 1)) / total) + 1e-3
        ratio = 1 + k * (np.clip(sd_t / sd_s, 0.6, 1.6) - 1)
        return (source - mu_s) * ratio + mu_s + k * (mu_t - mu_s)
    return source + k * (mu_t - mu_s)


def cross_blend(image: np.ndarray, box, landmarks, donor: np.ndarray, donor_landmarks,
                rng: np.random.Generator, lowres: bool = False,
                seamless: bool = False, clean: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A cross-identity blended image (Face X-ray, Li et al. CVPR 2020): another person's face,
    aligned onto this one by a similarity transform fitted to the 5 landmarks (with a little
    misalignment), altered like an SBI source, colour-matched in part or not at all, and blended
    inside the same random SBI mask. Returns (fake uint8 like image, effective mask).

    With `lowres` the donor face is re-rendered at a lower resolution first (`rerender`); with
    `seamless` it is pasted in the gradient domain (`gradient_blend`) instead of colour-matched.
    With `clean`, a swap as a careful tool makes it: the donor face is not altered (no colour
    jitter, no blur or sharpening), it replaces the face fully (blend ratio 1) and its colour
    mean and spread are matched to the target's in full, so that nothing but the other person's
    face (identity, skin texture, noise, resampling) tells it apart.
    Only pixels where the mask is > 0 change. The donor must be a different person; that is the
    caller's business (training/views.py's Donors picks one of similar pose from another identity).
    """
    from training.faceswap import similarity_transform, warp

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError("cross_blend expects an RGB uint8 array (H, W, 3)")
    h, w = image.shape[:2]
    tl = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    size = max(float(box[2]) - float(box[0]), float(box[3]) - float(box[1]), 1.0)
    dst = tl + rng.normal(0, 0.01, size=(5, 2)) * size
    m = similarity_transform(donor_landmarks, dst)
    warped, valid = warp(donor, m, (w, h))
    mask = blend_mask((h, w), box, landmarks, rng) * (valid >= 0.999)
    r = 1.0 if clean else float(rng.choice(BLEND_RATIOS))
    out = image.copy()
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return out, mask
    y0, y1 = max(0, ys.min() - 8), min(h, ys.max() + 9)
    x0, x1 = max(0, xs.min() - 8), min(w, xs.max() + 9)
    region = image[y0:y1, x0:x1]
    src = np.clip(np.rint(warped[y0:y1, x0:x1]), 0, 255).astype(np.uint8)
    if not clean:
        pil = Image.fromarray(src)
        if rng.random() < 0.3:
            pil = _color_jitter(pil, rng)
        pil = _sharpness(pil, rng)
        src = np.asarray(pil)
    if lowres:
        src = rerender(src, size, rng)
    mk = mask[y0:y1, x0:x1]
    if seamless:
        src = gradient_blend(src, region, mk, rng)
    src = src.astype(np.float32)
    if not seamless and (clean or rng.random() < 0.75):
        src = _match_colour(src, region.astype(np.float32), (mk > 0.9).astype(np.float32) + 1e-6, rng,
                            full=clean)
    a = (mk * r)[..., None]
    blended = np.clip(np.rint(region.astype(np.float32) * (1 - a) + src * a), 0, 255).astype(np.uint8)
    blended[a[..., 0] <= 0] = region[a[..., 0] <= 0]
    out[y0:y1, x0:x1] = blended
    return out, (mask * r).astype(np.float32)


# --- occluders (drawn once per pair, on the real and the fake alike) --------------------------

OCCLUDERS = ("frame", "blob", "bar")
"""Natural edges across or around a face that are not blends: a headscarf, hood, hat or hair
framing it ("frame"), a hand, an object or another head in front of its edge ("blob"), glasses,
a strand of hair or a microphone across it ("bar"). Real photos are full of them, and a model
that learned "an edge around the face = a blend" flags them (the false positives of verity-sbi
2.0.0 on held-out photos were mostly headscarves, hoods and overlapping heads)."""


def draw_occluder(shape: tuple[int, int], landmarks, texture: np.ndarray, rng: np.random.Generator,
                  kind: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(alpha float32 (H, W) in [0, 1], fill uint8 (H, W, 3)) of a random occluder on a face.

    The fill is a patch of `texture` (another photo), colour-shifted, or a flat colour with
    noise. Put it on an image with `occlude`; the caller uses the same pair for the real and the
    fake view, so the occluder itself is never evidence either way.
    """
    h, w = shape
    lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    eyes, mouth = (lm[0] + lm[1]) / 2, (lm[3] + lm[4]) / 2
    across, down = lm[1] - lm[0], mouth - eyes
    de, dm = max(np.linalg.norm(across), 1.0), max(np.linalg.norm(down), 1.0)
    u, v = across / de, down / dm
    centre = eyes + 0.4 * down
    a, b = 1.05 * de * rng.uniform(0.85, 1.15), 1.25 * dm * rng.uniform(0.9, 1.2)
    size = max(a, b)
    kind = kind or OCCLUDERS[int(rng.integers(0, len(OCCLUDERS)))]

    def ellipse(k: float, n: int = 48) -> list[tuple[float, float]]:
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        pts = centre + np.outer(k * a * np.cos(t), u) + np.outer(k * b * np.sin(t), v)
        return [tuple(p) for p in pts.tolist()]

    img = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(img)
    if kind == "frame":
        d.polygon(ellipse(rng.uniform(1.4, 2.2)), fill=255)
        d.polygon(ellipse(rng.uniform(0.85, 1.1)), fill=0)
        # keep a sector of the ring: the top (hat, fringe), the top and sides (scarf, hood), a side
        start, span = rng.uniform(0, 2 * np.pi), rng.uniform(np.pi / 3, 2 * np.pi)
        if rng.random() < 0.5:                      # centred on the top of the head
            start = -np.pi / 2 - span / 2
        t = np.linspace(start, start + span, 24)
        far = 4 * size
        wedge = [tuple(centre)] + [tuple(centre + far * (np.cos(x) * u + np.sin(x) * v)) for x in t]
        keep = Image.new("L", (w, h), 0)
        ImageDraw.Draw(keep).polygon(wedge, fill=255)
        img = Image.fromarray(np.minimum(np.asarray(img), np.asarray(keep)))
    elif kind == "blob":
        ang = rng.uniform(0, 2 * np.pi)
        r = size * rng.uniform(0.25, 0.6)
        c = centre + (1.0 - rng.uniform(0.0, 0.35)) * (a * np.cos(ang) * u + b * np.sin(ang) * v)
        t = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(5, 9))))
        pts = c + np.stack([np.cos(t), np.sin(t)], 1) * r * rng.uniform(0.6, 1.0, (len(t), 1))
        d.polygon([tuple(p) for p in pts.tolist()], fill=255)
    elif kind == "bar":
        ang = rng.uniform(0, np.pi)
        c = centre + rng.uniform(-0.5, 0.5, 2) * size
        direction = np.array([np.cos(ang), np.sin(ang)])
        p0, p1 = c - 3 * size * direction, c + 3 * size * direction
        d.line([tuple(p0), tuple(p1)], fill=255, width=max(2, round(size * rng.uniform(0.03, 0.12))))
    else:
        raise ValueError(f"unknown occluder {kind!r}")
    blur = float(rng.uniform(0.0, 0.012) * size)
    if blur > 0.3:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    alpha = np.asarray(img, dtype=np.float32) / 255.0

    if rng.random() < 0.7 and texture is not None and texture.size:
        tex = Image.fromarray(texture)
        k = rng.uniform(1.0, 2.0) * max(w / tex.width, h / tex.height)
        tex = tex.resize((max(w, round(tex.width * k)), max(h, round(tex.height * k))), Image.BILINEAR)
        x0, y0 = int(rng.integers(0, tex.width - w + 1)), int(rng.integers(0, tex.height - h + 1))
        fill = np.asarray(_color_jitter(tex.crop((x0, y0, x0 + w, y0 + h)), rng))
    else:
        flat = rng.integers(0, 256, 3).astype(np.float32)
        noise = rng.normal(0, rng.uniform(0, 12), (h, w, 1))
        fill = np.clip(flat + noise, 0, 255).astype(np.uint8)
    return alpha, np.ascontiguousarray(fill)


def occlude(image: np.ndarray, occluder: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The image with the occluder from draw_occluder painted over it."""
    alpha, fill = occluder
    a = alpha[..., None]
    out = image.astype(np.float32) * (1 - a) + fill.astype(np.float32) * a
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# --- whole-image augmentation (applied alike to real and fake) ------------------------------

def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


VIDEO_CODECS = {"libx264": (18, 38), "mpeg4": (2, 20), "mpeg2video": (2, 20), "mpeg1video": (2, 20)}
"""The video encoders a still may come from (`video_still`) and the range of their quality setting
(x264: crf; the MPEG encoders: a fixed quantiser, 2 best, 31 worst): H.264 as today's phones and
platforms write it, and the older MPEG-4 Part 2, MPEG-2 and MPEG-1 that old cameras, DVDs, TV
archives and old uploads still hold. Each has its own blocking, ringing and (H.264 only) deblocking."""
DECODERS = {"libx264": "h264"}
"""The decoder of an encoder whose name differs from its codec's."""


def encode_frame(image: np.ndarray, codec: str, quality: int) -> np.ndarray:
    """One picture through a video encoder (PyAV) as one intra frame, yuv420p, and decoded back:
    the blocking, chroma subsampling and (H.264) deblocking of a video frame, which JPEG does not
    reproduce. `quality`: x264's crf, or the MPEG encoders' fixed quantiser (VIDEO_CODECS)."""
    import fractions

    import av

    h, w = image.shape[:2]
    h2, w2 = h - h % 2, w - w % 2
    enc = av.CodecContext.create(codec, "w")
    enc.width, enc.height, enc.pix_fmt = w2, h2, "yuv420p"
    enc.time_base, enc.framerate = fractions.Fraction(1, 25), 25
    if codec == "libx264":
        enc.options = {"crf": str(int(quality)), "preset": "ultrafast", "tune": "zerolatency"}
    else:
        enc.options = {"qmin": str(int(quality)), "qmax": str(int(quality))}
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:h2, :w2]), format="rgb24")
    dec = av.CodecContext.create(DECODERS.get(codec, codec), "r")
    out = [f for pkt in list(enc.encode(frame)) + list(enc.encode(None)) for f in dec.decode(pkt)]
    out += list(dec.decode(None))
    rgb = out[0].to_ndarray(format="rgb24")
    if (h2, w2) != (h, w):
        rgb = np.pad(rgb, ((0, h - h2), (0, w - w2), (0, 0)), mode="edge")
    return rgb


def h264(image: np.ndarray, crf: int) -> np.ndarray:
    """One frame through H.264 (libx264, ultrafast, zerolatency) and back (`encode_frame`)."""
    return encode_frame(image, "libx264", crf)


def shrink(image: np.ndarray, box, landmarks, s: float, resample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The picture scaled by s (at least 16 px a side) with `resample`, and its box and landmarks
    (float32 copies) in the new pixels."""
    h, w = image.shape[:2]
    nw, nh = max(16, round(w * s)), max(16, round(h * s))
    image = np.asarray(Image.fromarray(image).resize((nw, nh), resample))
    box = np.asarray(box, dtype=np.float32) * np.array([nw / w, nh / h, nw / w, nh / h], dtype=np.float32)
    lms = np.asarray(landmarks, dtype=np.float32) * np.array([nw / w, nh / h], dtype=np.float32)
    return image, box, lms


VIDEO_FACE_PX = (64.0, 200.0)
"""How wide a face of a video still is (pixels): a speaker in a 360p call to a close-up in 720p."""


def video_still(image: np.ndarray, box, landmarks, rng: np.random.Generator,
                codec: tuple[str, int] | None = None, face_px: tuple[float, float] = VIDEO_FACE_PX):
    """A picture made a still of a video before anything is pasted into it: shrunk (never
    enlarged) until its face is face_px wide, then through one of VIDEO_CODECS at a random
    quality, as a face-swap tool gets its frames from a decoded video. `codec` (encoder, quality):
    that one instead of a random draw (a donor's frame made alike). Returns (image, box,
    landmarks, (encoder, quality)) in the still's pixels."""
    s = rng.uniform(*face_px) / max(float(box[2] - box[0]), 1.0)
    if s < 1.0:
        image, box, lms = shrink(image, box, landmarks, s, Image.BICUBIC if rng.random() < 0.5 else Image.BILINEAR)
    else:
        box, lms = np.asarray(box, dtype=np.float32).copy(), np.asarray(landmarks, dtype=np.float32).copy()
    if codec is None:
        name = list(VIDEO_CODECS)[int(rng.integers(0, len(VIDEO_CODECS)))]
        lo, hi = VIDEO_CODECS[name]
        codec = (name, int(rng.integers(lo, hi + 1)))
    return encode_frame(image, *codec), box, lms, codec


def degrade(image: np.ndarray, box, landmarks, rng: np.random.Generator,
            jpeg_range: tuple[int, int] = (30, 95), scale_range: tuple[float, float] = (0.3, 1.0),
            p_scale: float = 0.6, p_jpeg: float = 0.8, p_video: float = 0.0,
            crf_range: tuple[int, int] = (18, 36), reference: float = 1.0,
            face_px: tuple[float, float] | None = None):
    """What an upload goes through before it reaches us: downscale, then H.264 (a frame of a
    video, with p_video) and/or JPEG.

    `face_px` (low, high): instead of a random scale, shrink the picture so that the face box
    ends up low-high pixels wide (a small face in a group photo; never scaled up).

    Works on the large (cached) image before the classifier crop is taken, like the runtime
    sees a downsized, recompressed still. Returns (image, box, landmarks) in the new pixels.
    `reference`: the image's size as a fraction of the size the scales refer to (a face given
    back at its native resolution, 0.5 of the cache, is scaled by s / 0.5, and never up).
    """
    box = np.asarray(box, dtype=np.float32).copy()
    lms = np.asarray(landmarks, dtype=np.float32).copy()
    if face_px is not None:
        s = rng.uniform(*face_px) / max(float(box[2] - box[0]), 1.0)
    elif rng.random() < p_scale:
        s = rng.uniform(*scale_range) / reference
    else:
        s = 1.0
    if s < 1.0:
        resample = [Image.BILINEAR, Image.BICUBIC, Image.LANCZOS, Image.BOX][rng.integers(0, 4)]
        image, box, lms = shrink(image, box, lms, s, resample)
    video = p_video > 0 and rng.random() < p_video
    if video:
        image = h264(image, int(rng.integers(crf_range[0], crf_range[1] + 1)))
    if rng.random() < (p_jpeg * 0.5 if video else p_jpeg):
        image = jpeg(image, rng.integers(jpeg_range[0], jpeg_range[1] + 1))
    return image, box, lms


def augment(crop: np.ndarray, rng: np.random.Generator, also: list[np.ndarray] | None = None) -> np.ndarray:
    """Photometric augmentations of the final classifier crop (the paper's set): RGB shift,
    HSV, brightness/contrast, downscale-upscale, noise, JPEG and horizontal flip. `also`: maps
    aligned with the crop (a blend mask) that get the same flip, in place in the list."""
    pil = Image.fromarray(crop)
    if rng.random() < 0.3:
        pil = _color_jitter(pil, rng)
    if rng.random() < 0.2:
        w, h = pil.size
        s = rng.uniform(0.4, 0.8)
        pil = pil.resize((max(8, round(w * s)), max(8, round(h * s))), Image.BILINEAR).resize((w, h), Image.BILINEAR)
    arr = np.asarray(pil)
    if rng.random() < 0.15:
        arr = np.clip(arr.astype(np.float32) + rng.normal(0, rng.uniform(2, 8), arr.shape), 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        arr = jpeg(arr, rng.integers(30, 96))
    if rng.random() < 0.5:
        arr = arr[:, ::-1]
        if also is not None:
            also[:] = [np.ascontiguousarray(a[:, ::-1]) for a in also]
    return np.ascontiguousarray(arr)


def boundary(mask: np.ndarray) -> np.ndarray:
    """Face X-ray (Li et al., CVPR 2020) of a blend mask, float32 in [0, 1]: B = 4 M (1 - M) of
    the mask scaled to peak 1, so it lights up on the blending boundary whatever the blend
    ratio, and is 0 for an untouched image."""
    m = np.asarray(mask, dtype=np.float32)
    peak = float(m.max()) if m.size else 0.0
    if peak <= 0:
        return np.zeros(m.shape, np.float32)
    m = m / peak
    return 4.0 * m * (1.0 - m)


def pool(grid_map: np.ndarray, grid: int) -> np.ndarray:
    """A map area-averaged onto grid x grid cells, float32 clipped to [0, 1]."""
    img = Image.fromarray(np.asarray(grid_map, dtype=np.float32), mode="F").resize((grid, grid), Image.BOX)
    return np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)

