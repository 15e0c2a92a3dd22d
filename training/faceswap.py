"""Cross-identity face swaps (numpy + Pillow) for evaluating generalisation beyond SBI.

The shipped model learns from Self-Blended Images: a face blended with an altered copy of
*itself*. A real swap puts *another person's* face on the target, so the inner face differs in
identity, texture, lighting and geometry. This module makes such swaps the classic way
(the FaceSwap/"faceswap-GAN-free" recipe): align the source face onto the target with a
similarity transform fitted to the five RetinaFace landmarks, transfer the target's skin colour
(mean and standard deviation per CIELAB channel, inside the face), and blend through a
feathered ellipse around the inner face. The mask shape and the colour step differ from the
SBI generator on purpose, so that a detector is not judged on its own training recipe.

Deterministic: the same inputs give the same output. Only the face region of the target
changes; everything outside the feathered mask is the target's pixels, bit for bit.

Evaluation data only; never used to train the shipped model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

FEATHER = 0.10
"""Blur radius of the blend mask, as a fraction of the target's eye-to-mouth distance."""
STD_RATIO_LIMITS = (0.5, 2.0)
"""Colour transfer never stretches a channel's spread by more than this (avoids blow-outs)."""


# --- geometry --------------------------------------------------------------------------------

def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2 x 3 matrix M (rotation, uniform scale, translation) minimising |M [src;1] - dst|^2.

    Umeyama's closed form (1991), without reflection.
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0 ** 2).sum() / len(src)
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / var_s
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def warp(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Warp image by matrix (source -> output coordinates) onto a (width, height) canvas.

    Returns the warped RGB float32 image and a float32 mask of where it has source pixels.
    """
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(full)[:2].ravel().tolist()           # Pillow maps output -> input
    src = Image.fromarray(np.asarray(image, dtype=np.uint8))
    out = src.transform(size, Image.AFFINE, inv, resample=Image.BICUBIC)
    valid = Image.new("L", src.size, 255).transform(size, Image.AFFINE, inv, resample=Image.BILINEAR)
    return np.asarray(out, dtype=np.float32), np.asarray(valid, dtype=np.float32) / 255.0


# --- mask ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FaceFrame:
    """A face's own axes from its 5 landmarks: centre of the eyes and mouth, and the axes."""
    eyes: np.ndarray
    mouth: np.ndarray
    eye_dist: float
    eye_mouth: float
    angle: float

    @classmethod
    def from_landmarks(cls, landmarks) -> FaceFrame:
        lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
        eyes, mouth = (lm[0] + lm[1]) / 2, (lm[3] + lm[4]) / 2
        across = lm[1] - lm[0]
        return cls(eyes, mouth, float(np.linalg.norm(across)), float(np.linalg.norm(mouth - eyes)),
                   float(np.arctan2(across[1], across[0])))


def inner_face_ellipse(landmarks, n: int = 64) -> np.ndarray:
    """n points of an ellipse over the inner face (brows to chin, cheek to cheek)."""
    f = FaceFrame.from_landmarks(landmarks)
    down = f.mouth - f.eyes
    centre = f.eyes + 0.35 * down
    a = 0.95 * f.eye_dist                   # half-width, along the eye line
    b = 1.10 * f.eye_mouth                  # half-height, along eyes -> mouth
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ca, sa = np.cos(f.angle), np.sin(f.angle)
    x, y = a * np.cos(t), b * np.sin(t)
    return np.stack([centre[0] + ca * x - sa * y, centre[1] + sa * x + ca * y], axis=1)


def blend_mask(size: tuple[int, int], landmarks, feather: float = FEATHER) -> np.ndarray:
    """Feathered inner-face mask, float32 (H, W) in [0, 1]: 1 inside, 0 well outside.

    The ellipse is shrunk by the feather width before blurring so that the blur stays inside
    the ellipse drawn from the landmarks (nothing beyond it is touched).
    """
    f = FaceFrame.from_landmarks(landmarks)
    radius = max(1.0, feather * f.eye_mouth)
    pts = inner_face_ellipse(landmarks)
    centre = pts.mean(0)
    span = np.linalg.norm(pts - centre, axis=1).min()
    shrink = max(0.5, (span - 2.5 * radius) / span)
    pts = centre + (pts - centre) * shrink
    img = Image.new("L", size, 0)
    ImageDraw.Draw(img).polygon([tuple(p) for p in pts.tolist()], fill=255)
    return np.asarray(img.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32) / 255.0


# --- colour ----------------------------------------------------------------------------------

_RGB2XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                     [0.2126729, 0.7151522, 0.0721750],
                     [0.0193339, 0.1191920, 0.9503041]])
_WHITE = np.array([0.95047, 1.0, 1.08883])


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (0-255) to CIELAB (D65)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = lin @ _RGB2XYZ.T / _WHITE
    e = 216 / 24389
    fx = np.where(xyz > e, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    return np.stack([116 * fx[..., 1] - 16, 500 * (fx[..., 0] - fx[..., 1]),
                     200 * (fx[..., 1] - fx[..., 2])], axis=-1)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB (D65) to sRGB float (0-255, not clipped)."""
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16) / 116
    fx, fz = fy + lab[..., 1] / 500, fy - lab[..., 2] / 200
    f = np.stack([fx, fy, fz], axis=-1)
    e = 6 / 29
    xyz = np.where(f > e, f ** 3, 3 * e * e * (f - 4 / 29)) * _WHITE
    lin = xyz @ np.linalg.inv(_RGB2XYZ).T
    lin = np.clip(lin, 0, None)
    c = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)
    return c * 255.0


def color_transfer(source: np.ndarray, target: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Source recoloured so that its LAB mean/std inside weight match the target's (Reinhard)."""
    w = weight[..., None].astype(np.float64)
    total = max(w.sum(), 1e-6)
    ls, lt = rgb_to_lab(source), rgb_to_lab(target)
    mu_s, mu_t = (ls * w).sum((0, 1)) / total, (lt * w).sum((0, 1)) / total
    sd_s = np.sqrt(((ls - mu_s) ** 2 * w).sum((0, 1)) / total) + 1e-6
    sd_t = np.sqrt(((lt - mu_t) ** 2 * w).sum((0, 1)) / total) + 1e-6
    ratio = np.clip(sd_t / sd_s, *STD_RATIO_LIMITS)
    return lab_to_rgb((ls - mu_s) * ratio + mu_t)


# --- the swap --------------------------------------------------------------------------------

def _aligned_region(source: np.ndarray, source_landmarks, target: np.ndarray, target_landmarks,
                    feather: float):
    """The part of the target a feathered inner-face mask can reach (the ellipse plus the blur),
    and the source face aligned onto it: ((x0, y0, x1, y1), the target's landmarks in the region,
    the warped source, its valid-pixel map), or None when the region is empty."""
    h, w = target.shape[:2]
    f = FaceFrame.from_landmarks(target_landmarks)
    pts = inner_face_ellipse(target_landmarks)
    pad = 3 * max(1.0, feather * f.eye_mouth) + 2
    x0, y0 = (max(0, int(np.floor(v - pad))) for v in pts.min(0))
    x1, y1 = min(w, int(np.ceil(pts[:, 0].max() + pad))), min(h, int(np.ceil(pts[:, 1].max() + pad)))
    if x1 <= x0 or y1 <= y0:
        return None
    local = np.asarray(target_landmarks, dtype=np.float64) - np.array([x0, y0], dtype=np.float64)
    warped, valid = warp(source, similarity_transform(source_landmarks, local), (x1 - x0, y1 - y0))
    return (x0, y0, x1, y1), local, warped, valid


def swap_face(source: np.ndarray, source_landmarks, target: np.ndarray, target_landmarks) -> np.ndarray:
    """The target image with the source's inner face put in place of its own (uint8 RGB).

    source_landmarks / target_landmarks: 5 x 2 RetinaFace points (right eye, left eye, nose,
    right mouth corner, left mouth corner) in their own images' pixels.
    """
    target = np.asarray(target, dtype=np.uint8)
    aligned = _aligned_region(source, source_landmarks, target, target_landmarks, FEATHER)
    if aligned is None:
        return target.copy()
    (x0, y0, x1, y1), local, warped, valid = aligned
    region = target[y0:y1, x0:x1]
    mask = blend_mask((x1 - x0, y1 - y0), local) * valid
    recoloured = color_transfer(warped, region.astype(np.float32), _colour_core(mask))
    return _paste(target, (x0, y0, x1, y1), recoloured, mask)


def _colour_core(mask: np.ndarray) -> np.ndarray:
    """Where colour statistics are taken: the solid inner part of the mask, where both faces are
    skin (the whole mask when that part is too small)."""
    core = (mask > 0.95).astype(np.float32)
    return mask if core.sum() < 16 else core


def _paste(target: np.ndarray, box: tuple[int, int, int, int], face: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The target with `face` (float RGB of the box's size) alpha-blended into the box through mask;
    pixels with a zero mask keep the target's exact bytes (no colour round-trip)."""
    x0, y0, x1, y1 = box
    region = target[y0:y1, x0:x1]
    a = mask[..., None].astype(np.float64)
    blended = np.clip(np.rint(region * (1 - a) + face * a), 0, 255).astype(np.uint8)
    blended[mask == 0] = region[mask == 0]
    out = target.copy()
    out[y0:y1, x0:x1] = blended
    return out


# --- the re-rendered face (what reenactment and live face-swap tools paste) -------------------

RERENDER_FEATHER = 0.22
"""The soft paste of a re-rendered face: twice swap_face's feather."""


def rerender_face(source: np.ndarray, source_landmarks, target: np.ndarray, target_landmarks,
                  factor: float, drift: tuple[float, float, float] = (0.0, 0.0, 0.0),
                  smooth: float = 0.7) -> np.ndarray:
    """The target with a face re-rendered at 1/`factor` of the picture's resolution pasted in.

    A reenactment or live face-swap tool draws its face at a fixed size (256-512 px) and pastes
    it into a frame that is often larger: the face is sharp-edged nowhere, lower in resolution
    than its surroundings, smoothed by the generator, softly pasted, and a little off in
    colour. Here: the source face aligned onto the target (the target itself for a re-rendered
    same person), shrunk by `factor`, blurred by `smooth` px at that size, scaled back up,
    colour-matched in CIELAB and then shifted by `drift` (L, a, b), blended through a wide
    feathered ellipse. Deterministic; pixels outside the mask keep the target's bytes.
    """
    target = np.asarray(target, dtype=np.uint8)
    aligned = _aligned_region(source, source_landmarks, target, target_landmarks, RERENDER_FEATHER)
    if aligned is None:
        return target.copy()
    (x0, y0, x1, y1), local, warped, valid = aligned
    region = target[y0:y1, x0:x1]
    rw, rh = x1 - x0, y1 - y0
    small = Image.fromarray(np.clip(np.rint(warped), 0, 255).astype(np.uint8)).resize(
        (max(8, round(rw / factor)), max(8, round(rh / factor))), Image.BILINEAR, reducing_gap=2.0)
    if smooth > 0:
        small = small.filter(ImageFilter.GaussianBlur(smooth))
    rendered = np.asarray(small.resize((rw, rh), Image.BICUBIC), dtype=np.float64)
    mask = blend_mask((rw, rh), local, feather=RERENDER_FEATHER) * (valid > 0.999)
    lab = rgb_to_lab(color_transfer(rendered, region.astype(np.float32), _colour_core(mask))) + np.asarray(drift)
    return _paste(target, (x0, y0, x1, y1), lab_to_rgb(lab), mask)


# --- the seamless (Poisson) swap ---------------------------------------------------------------

def _neighbours(img: np.ndarray) -> np.ndarray:
    """Sum of the 4 neighbours of every interior pixel of an (H, W, C) image; 0 on the outer border."""
    out = np.zeros_like(img)
    out[1:-1, 1:-1] = img[:-2, 1:-1] + img[2:, 1:-1] + img[1:-1, :-2] + img[1:-1, 2:]
    return out


def _laplacian(img: np.ndarray) -> np.ndarray:
    """5-point Laplacian of an (H, W, C) float image; 0 on the outer border."""
    out = _neighbours(img)
    out[1:-1, 1:-1] -= 4 * img[1:-1, 1:-1]
    return out


def poisson_blend(source: np.ndarray, target: np.ndarray, mask: np.ndarray, tol: float = 1e-3,
                  max_iter: int = 2000, init: np.ndarray | None = None) -> np.ndarray:
    """Seamless cloning (Perez et al., SIGGRAPH 2003): inside the mask, the image whose Laplacian
    is the source's and which equals the target on the mask's boundary; the target elsewhere.

    The inner face keeps the source's texture and takes the target's colour and light at its
    edge: there is no colour seam for a detector to find. Conjugate gradients on the masked
    pixels (matrix-free 5-point Laplacian, Dirichlet boundary from the target), all channels at
    once, from `init` (default: the source). Returns float (H, W, C), not clipped.
    """
    src = np.asarray(source, dtype=np.float64)
    tgt = np.asarray(target, dtype=np.float64)
    om = np.asarray(mask) > 0.5
    om[0, :] = om[-1, :] = om[:, 0] = om[:, -1] = False   # the frame's edge is boundary
    out = tgt.copy()
    if not om.any():
        return out
    inside = om[..., None].astype(np.float64)

    def apply(x):  # (4 x - sum of unknown neighbours) on the masked pixels
        return (4 * x - _neighbours(x * inside)) * inside

    # b = -(source Laplacian) + the known (target) neighbours of each masked pixel
    b = (-_laplacian(src) + _neighbours(tgt * (1 - inside))) * inside
    x = (src if init is None else np.asarray(init, dtype=np.float64)) * inside
    r = b - apply(x)
    p = r.copy()
    rs = (r * r).sum(axis=(0, 1))
    stop = tol ** 2 * max(float((b * b).sum()), 1e-12)
    for _ in range(max_iter):
        if rs.sum() <= stop:
            break
        ap = apply(p)
        alpha = rs / np.maximum((p * ap).sum(axis=(0, 1)), 1e-30)
        x += alpha * p
        r -= alpha * ap
        rs_new = (r * r).sum(axis=(0, 1))
        p = r + (rs_new / np.maximum(rs, 1e-30)) * p
        rs = rs_new
    out[om] = x[om]
    return out


def _resize_float(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(img[..., c].astype(np.float32), "F").resize(size, Image.BILINEAR))
                     for c in range(img.shape[2])], axis=-1).astype(np.float64)


def seamless_clone(source: np.ndarray, target: np.ndarray, mask: np.ndarray, coarse: int = 96) -> np.ndarray:
    """poisson_blend in two levels: the smooth correction (solution minus source) is solved on a
    copy about `coarse` px wide, scaled up, and the full-size solve starts from it, so that
    conjugate gradients need a few hundred iterations instead of thousands."""
    h, w = mask.shape[:2]
    f = max(h, w) / coarse
    if f < 2:
        return poisson_blend(source, target, mask)
    size = (max(3, round(w / f)), max(3, round(h / f)))
    small_m = np.asarray(Image.fromarray((mask > 0.5).astype(np.uint8) * 255).resize(size, Image.BILINEAR)) > 127
    src_s = _resize_float(np.asarray(source, np.float64), size)
    tgt_s = _resize_float(np.asarray(target, np.float64), size)
    corr = (poisson_blend(src_s, tgt_s, small_m, tol=1e-4) - src_s) * small_m[..., None]
    init = np.asarray(source, np.float64) + _resize_float(corr, (w, h))
    return poisson_blend(source, target, mask, tol=2e-3, max_iter=400, init=init)


def poisson_swap_face(source: np.ndarray, source_landmarks, target: np.ndarray, target_landmarks) -> np.ndarray:
    """Like swap_face, but the source's inner face is cloned seamlessly (poisson_blend) inside
    the ellipse instead of colour-transferred and alpha-blended: the "seamless clone" option of
    the classic face-swap tools. No training generator blends in the gradient domain, so this
    set tests a detector on a manipulation it has not seen. Pixels outside the ellipse keep the
    target's exact bytes.
    """
    target = np.asarray(target, dtype=np.uint8)
    h, w = target.shape[:2]
    pts = inner_face_ellipse(target_landmarks)
    pad = 6
    x0, y0 = (max(0, int(np.floor(v - pad))) for v in pts.min(0))
    x1, y1 = min(w, int(np.ceil(pts[:, 0].max() + pad))), min(h, int(np.ceil(pts[:, 1].max() + pad)))
    if x1 - x0 < 8 or y1 - y0 < 8:
        return target.copy()
    offset = np.array([x0, y0], dtype=np.float64)
    region = target[y0:y1, x0:x1]
    m = similarity_transform(source_landmarks, np.asarray(target_landmarks, dtype=np.float64) - offset)
    warped, valid = warp(source, m, (x1 - x0, y1 - y0))
    # The same inner ellipse as swap_face's solid part (shrunk by its feather), hard-edged: the
    # clone itself removes the seam, and cheeks, hair and ears of the source stay out of it.
    f = FaceFrame.from_landmarks(target_landmarks)
    centre = pts.mean(0)
    span = np.linalg.norm(pts - centre, axis=1).min()
    shrink = max(0.5, (span - 2.5 * max(1.0, FEATHER * f.eye_mouth)) / span)
    img = Image.new("L", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(img).polygon([tuple(p) for p in (centre + (pts - centre) * shrink - offset).tolist()], fill=255)
    mask = (np.asarray(img) > 127) & (valid > 0.999)
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = False
    blended = np.clip(np.rint(seamless_clone(warped, region, mask)), 0, 255).astype(np.uint8)
    out = target.copy()
    out[y0:y1, x0:x1][mask] = blended[mask]
    return out


def largest_face(face_detector, rgb: np.ndarray):
    """The detector's largest face in rgb, or None."""
    faces = face_detector.detect(rgb)
    return max(faces, key=lambda f: f.width * f.height) if faces else None


def swap_images(face_detector, source: np.ndarray, target: np.ndarray) -> np.ndarray | None:
    """Detect the largest face in each image and swap source's onto target; None without faces."""
    fs, ft = largest_face(face_detector, source), largest_face(face_detector, target)
    if fs is None or ft is None:
        return None
    return swap_face(source, fs.landmarks, target, ft.landmarks)
