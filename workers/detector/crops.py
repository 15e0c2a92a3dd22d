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
    pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
    cx, cy, side, angle = crop_transform(box, landmarks, margin, align)
    k = side / size
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
