"""Face crops for the classifier. training/ uses this very function, so that the crops a model
learns from and the crops it is judged on are made the same way."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def crop_transform(box, landmarks, margin: float, align: bool) -> tuple[float, float, float, float]:
    """Centre (cx, cy), side and rotation angle (radians) of the square crop around a face."""
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    side = max(x2 - x1, y2 - y1) * margin
    angle = 0.0
    if align and landmarks is not None:
        (ex1, ey1), (ex2, ey2) = landmarks[0], landmarks[1]
        angle = math.atan2(ey2 - ey1, ex2 - ex1)
    return cx, cy, side, angle


def crop_face(image: np.ndarray | Image.Image, box, landmarks, size: int, margin: float = 1.3,
              align: bool = False) -> np.ndarray:
    """Square crop of side max(box w, h) * margin centred on the box, resized to size x size.

    With align, the crop is rotated about the box centre so that the eyes are level. Parts of
    the crop outside the image are black. Returns an RGB uint8 array (size, size, 3).
    """
    cx, cy, side, angle = crop_transform(box, landmarks, margin, align)
    k = side / size
    # An aligned crop that shrinks the face by 2x or more is first box-filtered by the whole
    # factor r (Pillow's reduce), then rotated and resized by what is left (< 2x): a bilinear
    # transform reads only 2 x 2 pixels per output pixel, so at 5x it would alias (jagged
    # edges, moire) where the model, which learns from crops of at most ~2x, saw none.
    r = int(k) if align and k >= 2.0 else 1
    if isinstance(image, Image.Image):
        pil, x0, y0 = image, 0, 0
    else:
        # Hand Pillow only the part of the frame the crop can read (the rotated square's bounding
        # box plus 2 px for the bilinear neighbours, on the r-pixel grid), not a copy of the whole
        # frame: 1.5 ms less per face on a 1080p frame, same pixels (tests/test_detector.py).
        h, w = image.shape[:2]
        reach = side * (abs(math.cos(angle)) + abs(math.sin(angle))) / 2 + 2 * r
        x0, y0 = max(0, math.floor(cx - reach)), max(0, math.floor(cy - reach))
        x0, y0 = x0 - x0 % r, y0 - y0 % r
        x1, y1 = min(w, math.ceil(cx + reach) + 1), min(h, math.ceil(cy + reach) + 1)
        if x1 <= x0 or y1 <= y0:  # the crop lies wholly outside the frame: all black
            return np.zeros((size, size, 3), dtype=np.uint8)
        x1, y1 = min(w, x1 + (-(x1 - x0)) % r), min(h, y1 + (-(y1 - y0)) % r)
        pil = Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1]))
    cx, cy = cx - x0, cy - y0
    if r > 1:
        pil = pil.reduce(r)
        cx, cy, k = cx / r, cy / r, k / r
    cos, sin = math.cos(angle), math.sin(angle)
    # Output pixel (u, v) -> input pixel: centre + R(angle) @ ((u, v) - size/2) * k
    a, b = cos * k, -sin * k
    d, e = sin * k, cos * k
    c = cx - a * size / 2 - b * size / 2
    f = cy - d * size / 2 - e * size / 2
    if not align and k > 2.0:
        # Large downscale: crop first, then resize with a proper filter (avoids aliasing).
        left, top = cx - side / 2, cy - side / 2
        region = pil.crop((round(left), round(top), round(left + side), round(top + side)))
        return np.asarray(region.resize((size, size), Image.BILINEAR, reducing_gap=2.0))
    out = pil.transform((size, size), Image.AFFINE, (a, b, c, d, e, f), resample=Image.BILINEAR)
    return np.asarray(out)
