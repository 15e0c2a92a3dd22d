"""The parts of a face crop that need no OpenCV: where the crop square lies, and the large
unrotated downscale (Pillow). `detector.crops` builds on them; training.gpu_pack's Pillow
stand-in for a machine without OpenCV uses the very same functions."""

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


def crop_unrotated(image: np.ndarray, cx: float, cy: float, side: float, size: int) -> np.ndarray:
    """The unrotated square of `side` about (cx, cy), resized to size x size with a proper filter
    (no aliasing on a large downscale, the training cache's path); parts outside the image black."""
    h, w = image.shape[:2]
    left, top = round(cx - side / 2), round(cy - side / 2)
    right, bottom = round(cx - side / 2 + side), round(cy - side / 2 + side)
    x0, y0, x1, y1 = max(0, left), max(0, top), min(w, right), min(h, bottom)
    region = Image.new("RGB", (right - left, bottom - top))
    if x1 > x0 and y1 > y0:
        region.paste(Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1])), (x0 - left, y0 - top))
    return np.asarray(region.resize((size, size), Image.BILINEAR, reducing_gap=2.0))
