"""Face crops for the classifier. training/ uses this very function, so that the crops a model
learns from and the crops it is judged on are made the same way."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from detector.crop_geometry import crop_transform, crop_unrotated

__all__ = ["crop_face", "crop_transform"]

try:
    import cv2
except ImportError as e:  # opencv-python is installed but the system lacks libGL or GLib
    raise ImportError(f"OpenCV (face crops) cannot load: {e}. Install the system libraries it needs: "
                      "apt-get install libgl1 libglib2.0-0 (README, Installing)") from e

# One crop is a few hundred microseconds of work, too small to share between threads; one thread
# also keeps OpenCV's pool from competing with onnxruntime's threads for the cores.
cv2.setNumThreads(1)


def crop_face(image: np.ndarray | Image.Image, box, landmarks, size: int, margin: float = 1.3,
              align: bool = False) -> np.ndarray:
    """Square crop of side max(box w, h) * margin centred on the box, resized to size x size.

    With align, the crop is rotated about the box centre so that the eyes are level. Parts of
    the crop outside the image are black. Returns an RGB uint8 array (size, size, 3).

    The rotation and resize is one bilinear warp with OpenCV (0.1 ms for a 224 px crop against
    1.0 ms for Pillow's generic affine transform, bench/detector.py). It keeps Pillow's
    conventions, which the models up to 2.0.0 were trained with: pixel centres at +0.5,
    neighbours clamped at the border, and a sample point outside the image gives black
    (tests/test_detector.py compares the two within one grey level).
    """
    if isinstance(image, Image.Image):
        image = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    cx, cy, side, angle = crop_transform(box, landmarks, margin, align)
    k = side / size
    h, w = image.shape[:2]
    if not align and k > 2.0:
        # Large unrotated downscale (the training cache): crop first, then resize with a proper
        # filter (avoids aliasing). Pillow, as ever on this path.
        return crop_unrotated(image, cx, cy, side, size)
    # An aligned crop that shrinks the face by 2x or more is first box-filtered by the whole
    # factor r, then rotated and resized by what is left (< 2x): a bilinear warp reads only
    # 2 x 2 pixels per output pixel, so at 5x it would alias (jagged edges, moire) where the
    # model, which learns from crops of at most ~2x, saw none.
    r = int(k) if align and k >= 2.0 else 1
    # Read only the part of the frame the crop can reach: the rotated square's bounding box plus
    # 2 px for the bilinear neighbours, on the r-pixel grid.
    reach = side * (abs(math.cos(angle)) + abs(math.sin(angle))) / 2 + 2 * r
    x0, y0 = max(0, math.floor(cx - reach)), max(0, math.floor(cy - reach))
    x0, y0 = x0 - x0 % r, y0 - y0 % r
    x1, y1 = min(w, math.ceil(cx + reach) + r), min(h, math.ceil(cy + reach) + r)
    if x1 <= x0 or y1 <= y0:  # the crop lies wholly outside the frame: all black
        return np.zeros((size, size, 3), dtype=np.uint8)
    src = _reduce(image[y0:y1, x0:x1], r) if r > 1 else image[y0:y1, x0:x1]
    cx, cy, k = (cx - x0) / r, (cy - y0) / r, k / r
    # Output pixel centre (u + 0.5, v + 0.5) -> source point centre + R(angle) @ ((u, v) - size/2) * k,
    # read at pixel centres (source point - 0.5).
    cos, sin = math.cos(angle), math.sin(angle)
    a, b, d, e = cos * k, -sin * k, sin * k, cos * k
    c = cx - (a + b) * size / 2
    f = cy - (d + e) * size / 2
    m = np.array([[a, b, c + (a + b) / 2 - 0.5], [d, e, f + (d + e) / 2 - 0.5]])
    # In float, then truncated as Pillow does (in uint8 OpenCV rounds: 0.4 grey levels brighter).
    out = cv2.warpAffine(src.astype(np.float32), m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REPLICATE).astype(np.uint8)
    sh, sw = src.shape[:2]
    corners = np.array([[0.5, 0.5, size - 0.5, size - 0.5], [0.5, size - 0.5, 0.5, size - 0.5]])
    xs, ys = np.array([[a, b], [d, e]]) @ corners + np.array([[c], [f]])
    if xs.min() < 0 or ys.min() < 0 or xs.max() >= sw or ys.max() >= sh:
        # Part of the crop lies outside the frame: black there, as Pillow does.
        g = np.arange(size, dtype=np.float64) + 0.5
        px = a * g[None, :] + b * g[:, None] + c
        py = d * g[None, :] + e * g[:, None] + f
        out[(px < 0) | (px >= sw) | (py < 0) | (py >= sh)] = 0
    return out


def _reduce(region: np.ndarray, r: int) -> np.ndarray:
    """The rounded mean of each r x r cell (Pillow's Image.reduce, which the models up to 2.0.0
    were trained with): cells cut by the frame's edge average the pixels they have."""
    h, w = region.shape[:2]
    fh, fw = h // r, w // r
    out = np.empty((-(-h // r), -(-w // r), 3), dtype=np.uint8)
    if fh and fw:
        out[:fh, :fw] = cv2.resize(region[:fh * r, :fw * r], (fw, fh), interpolation=cv2.INTER_AREA)
    if w > fw * r:  # the right-hand column of cut cells, corner included
        out[:, fw] = _strip_means(region[:, fw * r:], r)
    if h > fh * r:  # the bottom row of cut cells
        out[fh, :fw] = _strip_means(region[fh * r:, :fw * r].transpose(1, 0, 2), r)
    return out


def _strip_means(strip: np.ndarray, r: int) -> np.ndarray:
    """Rounded means of each run of r rows of a (rows, columns, 3) strip, over all its columns."""
    starts = np.arange(0, len(strip), r)
    sums = np.add.reduceat(strip.sum(1, dtype=np.uint32), starts, 0)
    counts = (np.diff(np.append(starts, len(strip))) * strip.shape[1])[:, None]
    return ((sums + counts // 2) // counts).astype(np.uint8)
