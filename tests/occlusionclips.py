"""Talking-face clips with an occluder passing in front of the face, and their face-swap fakes.

The occlusion check (detector/occlusion.py) looks at what a face does when something passes in
front of it. A real face is hidden by the occluder; a face pasted by a swap tool that has no
occlusion mask stays on top of it: inside the tool's blend mask the swapped face covers the hand.
This module makes both from real video (../shared/data/talking-faces, GRID CC BY 4.0 and the
video-retalking inputs, research use):

- `draw_hand`: a hand-like occluder (palm, four fingers, thumb and forearm as rounded polygons,
  one skin tone per clip, shading, anti-aliased soft edge, optional motion blur) composited onto a
  frame; returns the frame and the occluder's alpha.
- `occlude`: the hand enters from one side about 1 s in, passes in front of the face ("across",
  40-90% of the face box covered at the peak) or near it ("beside", at most ~10%: a hard
  negative) over 0.8-1.6 s, and leaves. Returns the frames and the ground-truth coverage of the
  face box per frame.
- `fake_over_occluder`: the fake. Landmarks come from the CLEAN frame (the tool tracks the face)
  and the donor's face is pasted onto the OCCLUDED frame with `training.faceswap.swap_face`
  (similarity-aligned, feathered inner-face ellipse, colour transfer): inside the ellipse the
  pasted face covers the hand. Recipes "paste", "flicker" (the tool loses the face while the hand
  hides more than ~half of it, and the occluded original shows through) and "lowres" (the swap
  is made in an aligned 128-256 px crop, scaled up and pasted with a softer mask).
- `write_mp4` (H.264, yuv420p), `write_y4m` (YUV4MPEG2 4:2:0, Chromium's
  --use-file-for-fake-video-capture format; `size=(640, 480)` for what the browser asks for).
- `tiny_pair`: a 2.5 s 360x288 GRID clip with a hand across the face and its fake, for CI.

Everything is deterministic for a given numpy Generator.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from training.faceswap import inner_face_ellipse, similarity_transform, swap_face

REPO = Path(__file__).resolve().parents[1]
TALKING_FACES = REPO.parent / "shared" / "data" / "talking-faces"
LICENCES = {
    "grid": "GRID corpus (Cooke et al. 2006) CC BY 4.0, via rizkiarm/LipNet (MIT)",
    "video-retalking": "OpenTalker/video-retalking examples (Apache-2.0 repo; clip rights not stated: research use)",
}

SKIN_TONES = np.array([
    (241, 204, 178), (229, 184, 153), (214, 164, 128), (196, 140, 104),
    (170, 116, 84), (141, 94, 66), (112, 74, 52), (86, 58, 42),
], dtype=np.float64)
"""Base skin colours (sRGB), light to dark; each clip takes one with a small random shift."""


# --- the detector ---------------------------------------------------------------------------

def make_face_detector(threads: int = 1, score_threshold: float | None = None):
    """A CPU RetinaFace FaceDetector (as the runtime builds it), `threads` onnxruntime threads."""
    from detector.faces import FaceDetector, retinaface_onnx_bytes
    from detector.runtime import make_session

    session, _ = make_session(retinaface_onnx_bytes(), "cpu", threads=threads)
    kw = {} if score_threshold is None else {"score_threshold": score_threshold}
    return FaceDetector(session, **kw)


@dataclass(slots=True)
class Track:
    """The largest face per frame: boxes (N, 4) x1 y1 x2 y2, landmarks (N, 5, 2), scores (N,)
    and found (N,) bool. Frames without a detection hold the nearest detected frame's values
    (linearly interpolated between two detections)."""
    boxes: np.ndarray
    landmarks: np.ndarray
    scores: np.ndarray
    found: np.ndarray


def track_faces(frames, detector) -> Track:
    """Detect the largest face in every frame; fill gaps by interpolation. Raises ValueError when
    no frame has a face."""
    n = len(frames)
    boxes = np.zeros((n, 4))
    lms = np.zeros((n, 5, 2))
    scores = np.zeros(n)
    found = np.zeros(n, bool)
    for i, f in enumerate(frames):
        faces = detector.detect(f)
        if faces:
            best = max(faces, key=lambda x: x.width * x.height)
            boxes[i], lms[i], scores[i], found[i] = best.box, best.landmarks, best.score, True
    if not found.any():
        raise ValueError("no face in any frame")
    idx = np.flatnonzero(found)
    t = np.arange(n)
    for arr in (boxes, lms):
        flat = arr.reshape(n, -1)
        for k in range(flat.shape[1]):
            flat[:, k] = np.interp(t, idx, flat[idx, k])
    return Track(boxes, lms, scores, found)


# --- reading and writing --------------------------------------------------------------------

def _even(v: float) -> int:
    return max(2, round(v / 2) * 2)


def read_frames(path, max_seconds: float | None = None, max_side: int | None = None):
    """RGB uint8 frames of the first video stream (PyAV) and the frame rate (a Fraction).

    max_seconds: stop after that much video; max_side: downscale (INTER_AREA) so that the longer
    side is at most this, with even width and height (what yuv420p needs)."""
    frames = []
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        fps = Fraction(st.average_rate) if st.average_rate else Fraction(25)
        limit = None if max_seconds is None else round(float(max_seconds) * fps)
        for fr in c.decode(st):
            rgb = fr.to_ndarray(format="rgb24")
            h, w = rgb.shape[:2]
            s = 1.0 if not max_side or max(h, w) <= max_side else max_side / max(h, w)
            nw, nh = _even(w * s), _even(h * s)
            if (nw, nh) != (w, h):
                rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
            frames.append(np.ascontiguousarray(rgb))
            if limit is not None and len(frames) >= limit:
                break
    return frames, fps


def write_mp4(frames, fps, path, crf: int = 23, preset: str = "veryfast"):
    """H.264 (libx264), yuv420p, constant quality `crf`. Odd sizes are cropped to even."""
    path = Path(path)
    h, w = frames[0].shape[:2]
    w2, h2 = w - w % 2, h - h % 2
    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        st.width, st.height, st.pix_fmt = w2, h2, "yuv420p"
        st.options = {"crf": str(crf), "preset": preset}
        for f in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[:h2, :w2]), format="rgb24")
            for p in st.encode(vf):
                c.mux(p)
        for p in st.encode():
            c.mux(p)
    return path


def fit_frame(rgb: np.ndarray, size: tuple[int, int], mode: str = "crop") -> np.ndarray:
    """rgb resized to size = (width, height): "crop" (fill, centre-crop the excess), "pad" (fit,
    black bars) or "stretch"."""
    w, h = size
    ih, iw = rgb.shape[:2]
    if mode == "stretch":
        return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    s = max(w / iw, h / ih) if mode == "crop" else min(w / iw, h / ih)
    nw, nh = max(1, round(iw * s)), max(1, round(ih * s))
    img = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    if mode == "crop":
        x0, y0 = (nw - w) // 2, (nh - h) // 2
        return np.ascontiguousarray(img[y0:y0 + h, x0:x0 + w])
    out = np.zeros((h, w, 3), np.uint8)
    x0, y0 = (w - nw) // 2, (h - nh) // 2
    out[y0:y0 + nh, x0:x0 + nw] = img
    return out


def rgb_to_i420(rgb: np.ndarray) -> bytes:
    """BT.601 limited-range Y, U, V planes (4:2:0, chroma averaged over 2 x 2) of an even-sized
    RGB frame, as one I420 buffer."""
    f = rgb.astype(np.float32)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = 16 + 0.256788 * r + 0.504129 * g + 0.097906 * b
    u = 128 - 0.148223 * r - 0.290993 * g + 0.439216 * b
    v = 128 + 0.439216 * r - 0.367788 * g - 0.071427 * b
    h, w = y.shape

    def sub(p):
        return p.reshape(h // 2, 2, w // 2, 2).mean((1, 3))

    planes = [y, sub(u), sub(v)]
    return b"".join(np.clip(np.rint(p), 0, 255).astype(np.uint8).tobytes() for p in planes)


def write_y4m(frames, fps, path, size: tuple[int, int] | None = None, mode: str = "crop"):
    """Raw YUV4MPEG2 4:2:0 (C420jpeg, progressive), the file format of Chromium's
    --use-file-for-fake-video-capture. size=(640, 480) resizes every frame (see fit_frame)."""
    path = Path(path)
    fr = Fraction(fps).limit_denominator(1001)
    first = frames[0] if size is None else fit_frame(frames[0], size, mode)
    h, w = first.shape[:2]
    w2, h2 = w - w % 2, h - h % 2
    with open(path, "wb") as fh:
        fh.write(f"YUV4MPEG2 W{w2} H{h2} F{fr.numerator}:{fr.denominator} Ip A1:1 C420jpeg\n".encode())
        for f in frames:
            if size is not None:
                f = fit_frame(f, size, mode)
            fh.write(b"FRAME\n")
            fh.write(rgb_to_i420(f[:h2, :w2]))
    return path


# --- the hand -------------------------------------------------------------------------------

def _capsule(p0, p1, r0, r1, n: int = 10) -> np.ndarray:
    """Polygon of a rounded segment from p0 (radius r0) to p1 (radius r1)."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    a = math.atan2(d[1], d[0])
    t1 = np.linspace(a - math.pi / 2, a + math.pi / 2, n)           # cap around p1
    t0 = np.linspace(a + math.pi / 2, a + 3 * math.pi / 2, n)       # cap around p0
    cap1 = p1 + r1 * np.stack([np.cos(t1), np.sin(t1)], 1)
    cap0 = p0 + r0 * np.stack([np.cos(t0), np.sin(t0)], 1)
    return np.concatenate([cap1, cap0])


def _rounded_palm(w: float, h: float, n: int = 48) -> np.ndarray:
    """A superellipse palm, centred at 0, width w, height h, slightly narrower at the wrist."""
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    e = 2.0 / 3.5
    x = (w / 2) * np.sign(c) * np.abs(c) ** e
    y = (h / 2) * np.sign(s) * np.abs(s) ** e
    x = x * (1 - 0.12 * np.clip(y / (h / 2), 0, 1))                 # y > 0 is the wrist side
    return np.stack([x, y], 1)


@dataclass(frozen=True, slots=True)
class HandStyle:
    """What stays fixed for one clip: skin colour, finger spread and lengths, light direction,
    the forearm (always drawn by `random`: it comes up from below the frame, and `occlude`
    relies on it for coverage rising as the hand goes up), the texture seed, left or right hand."""
    skin: tuple[float, float, float]
    spread: float
    lengths: tuple[float, float, float, float]
    thumb_angle: float
    light: float
    arm: bool
    texture_seed: int
    mirror: bool = False

    @classmethod
    def random(cls, rng: np.random.Generator, brightness: float = 1.0) -> HandStyle:
        base = SKIN_TONES[rng.integers(len(SKIN_TONES))] + rng.normal(0, 6, 3)
        base = np.clip(base * brightness, 20, 250)
        lengths = tuple(float(v) for v in np.array([0.78, 0.88, 0.84, 0.66]) * rng.uniform(0.9, 1.1, 4))
        return cls(tuple(float(v) for v in base), float(rng.uniform(0.02, 0.12)), lengths,
                   float(rng.uniform(0.55, 0.95)), float(rng.uniform(0, 2 * math.pi)),
                   True, int(rng.integers(1 << 30)), bool(rng.random() < 0.5))


def _hand_polygons(style: HandStyle) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The hand in its own units (palm width 1, fingers toward -y, palm centre at 0):
    (filled polygons, crease polylines)."""
    polys = [_rounded_palm(1.0, 1.05)]
    creases = []
    xs = (-0.36, -0.12, 0.12, 0.35)
    widths = (0.105, 0.11, 0.105, 0.09)
    for k, (x, r, ln) in enumerate(zip(xs, widths, style.lengths)):
        ang = (k - 1.5) * style.spread                              # fan the fingers out
        base = np.array([x, -0.38])
        tip = base + ln * np.array([math.sin(ang), -math.cos(ang)])
        polys.append(_capsule(base, tip, r * 1.05, r * 0.9))
        if k:
            creases.append(np.array([[(x + xs[k - 1]) / 2, -0.52], [(x + xs[k - 1]) / 2 + 0.01, -0.38]]))
    # thumb on the +x side, from the lower palm outwards
    side = 1.0
    tb = np.array([0.38 * side, 0.22])
    ta = style.thumb_angle
    tip = tb + 0.62 * np.array([side * math.sin(ta), -math.cos(ta)])
    polys.append(_capsule(tb, tip, 0.15, 0.1))
    creases.append(np.array([[-0.42, -0.12], [-0.1, -0.2], [0.3, -0.1]]))     # heart line
    creases.append(np.array([[0.3, 0.3], [0.12, 0.05], [-0.05, -0.2]]))     # life line
    if style.arm:
        polys.append(_capsule(np.array([0.0, 0.45]), np.array([0.05, 3.2]), 0.36, 0.45))
    if style.mirror:                                                # the other hand
        flip = np.array([-1.0, 1.0])
        polys, creases = [p * flip for p in polys], [p * flip for p in creases]
    return polys, creases


def draw_hand(frame_rgb: np.ndarray, center_xy, scale: float, angle: float,
              rng: np.random.Generator | None = None, *, style: HandStyle | None = None,
              velocity=(0.0, 0.0), blur: float = 0.4, opacity: float = 1.0, alpha_only: bool = False):
    """Composite a hand (palm centre at center_xy, palm `scale` px wide, fingers pointing at
    `angle` radians clockwise from straight up) onto a copy of frame_rgb.

    style: skin tone and shape (HandStyle.random(rng) when None: pass one per clip so that the
    hand does not change between frames). velocity: the hand's motion in px per frame; a motion
    blur of `blur` times it is applied (exposure ~ 0.4 of the frame time). Returns (frame uint8,
    alpha float32 (H, W) in [0, 1])."""
    if style is None:
        style = HandStyle.random(rng if rng is not None else np.random.default_rng())
    frame = np.asarray(frame_rgb, dtype=np.uint8)
    H, W = frame.shape[:2]
    polys, creases = _hand_polygons(style)
    ca, sa = math.cos(angle), math.sin(angle)
    rot = np.array([[ca, -sa], [sa, ca]])
    c = np.asarray(center_xy, float)

    def to_px(p):
        return p @ rot.T * scale + c

    polys_px = [to_px(p) for p in polys]
    creases_px = [to_px(p) for p in creases]
    vel = np.asarray(velocity, float) * blur
    pad = int(np.ceil(0.08 * scale + np.abs(vel).max() + 4))
    allp = np.concatenate(polys_px)
    x0 = max(0, int(np.floor(allp[:, 0].min())) - pad)
    y0 = max(0, int(np.floor(allp[:, 1].min())) - pad)
    x1 = min(W, int(np.ceil(allp[:, 0].max())) + pad)
    y1 = min(H, int(np.ceil(allp[:, 1].max())) + pad)
    alpha_full = np.zeros((H, W), np.float32)
    if x1 <= x0 or y1 <= y0:
        return frame.copy(), alpha_full
    pw, ph = x1 - x0, y1 - y0
    SHIFT = 4
    off = np.array([x0, y0], float)

    def fix(p):
        return np.rint((p - off) * (1 << SHIFT)).astype(np.int32)

    mask = np.zeros((ph, pw), np.uint8)
    for p in polys_px:
        cv2.fillPoly(mask, [fix(p)], 255, lineType=cv2.LINE_AA, shift=SHIFT)
    a = mask.astype(np.float32) / 255.0
    edge_sigma = max(0.5, 0.006 * scale)
    a = cv2.GaussianBlur(a, (0, 0), edge_sigma)
    if alpha_only:
        alpha_full[y0:y1, x0:x1] = a
        return frame, alpha_full
    # Shading: darker toward the silhouette (the hand is round), a light gradient, creases,
    # a faint skin texture.
    inner = cv2.GaussianBlur(a, (0, 0), max(1.0, 0.12 * scale))
    yy, xx = np.mgrid[0:ph, 0:pw].astype(np.float32)
    lx, ly = math.cos(style.light), math.sin(style.light)
    grad = ((xx + x0 - c[0]) * lx + (yy + y0 - c[1]) * ly) / max(scale, 1.0)
    shade = (0.62 + 0.38 * np.clip(inner * 1.6, 0, 1)) * (1.0 + 0.12 * np.clip(grad, -1.5, 1.5))
    crease = np.zeros((ph, pw), np.uint8)
    th = max(1, round(0.02 * scale))
    for p in creases_px:
        cv2.polylines(crease, [fix(p)], False, 255, th, lineType=cv2.LINE_AA, shift=SHIFT)
    crease_f = cv2.GaussianBlur(crease.astype(np.float32) / 255.0, (0, 0), max(0.6, 0.012 * scale))
    # finger boundaries: where two finger outlines meet, through a second outline pass
    outline = np.zeros((ph, pw), np.uint8)
    for p in polys_px[1:5]:
        cv2.polylines(outline, [fix(p)], True, 255, th, lineType=cv2.LINE_AA, shift=SHIFT)
    outline_f = cv2.GaussianBlur(outline.astype(np.float32) / 255.0, (0, 0), max(0.6, 0.01 * scale))
    palm = np.zeros((ph, pw), np.uint8)                           # no finger outline inside the palm
    cv2.fillPoly(palm, [fix(polys_px[0])], 255, lineType=cv2.LINE_AA, shift=SHIFT)
    palm_f = cv2.GaussianBlur(palm.astype(np.float32) / 255.0, (0, 0), max(1.0, 0.03 * scale))
    shade = shade * (1 - 0.28 * crease_f) * (1 - 0.22 * outline_f * (a > 0.98) * (1 - palm_f))
    trng = np.random.default_rng(style.texture_seed)
    cell = max(2, int(0.03 * scale))
    tex = trng.normal(0, 1, (max(2, ph // cell + 1), max(2, pw // cell + 1))).astype(np.float32)
    tex = cv2.resize(tex, (pw, ph), interpolation=cv2.INTER_CUBIC)[:ph, :pw]
    shade = shade * (1 + 0.02 * tex)
    hand = np.clip(np.asarray(style.skin, np.float32)[None, None, :] * shade[..., None], 0, 255)
    # Specular hint on the lit side of the palm
    hx, hy = c - off + 0.2 * scale * np.array([lx, ly])
    spec = np.exp(-(((xx - hx) ** 2 + (yy - hy) ** 2) / (2 * (0.22 * scale) ** 2)))
    hand = np.clip(hand + 18 * spec[..., None] * a[..., None], 0, 255)
    # Motion blur: a line kernel along the velocity, on premultiplied colour and alpha.
    length = float(np.hypot(*vel))
    if length >= 1.5:
        k = math.ceil(length) | 1
        ker = np.zeros((k, k), np.float32)
        cc = k // 2
        ux, uy = vel / length
        for t in np.linspace(-length / 2, length / 2, 4 * k):
            ker[round(cc + uy * t), round(cc + ux * t)] += 1
        ker /= ker.sum()
        prem = cv2.filter2D(hand * a[..., None], -1, ker, borderType=cv2.BORDER_CONSTANT)
        a = cv2.filter2D(a, -1, ker, borderType=cv2.BORDER_CONSTANT)
        hand = prem / np.maximum(a[..., None], 1e-4)
    a = np.clip(a * opacity, 0, 1)
    out = frame.copy()
    region = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.clip(np.rint(region * (1 - a[..., None]) + hand * a[..., None]), 0, 255).astype(np.uint8)
    alpha_full[y0:y1, x0:x1] = a
    return out, alpha_full


def hand_alpha(shape, center_xy, scale, angle, style: HandStyle) -> np.ndarray:
    """Only the alpha of draw_hand (for planning a path), on a blank frame of `shape`."""
    return draw_hand(np.zeros(shape, np.uint8), center_xy, scale, angle, style=style, blur=0, alpha_only=True)[1]


def box_coverage(alpha: np.ndarray, box) -> float:
    """Mean occluder alpha inside the box (x1, y1, x2, y2): the fraction of the face box covered."""
    x1, y1, x2, y2 = (round(v) for v in box)
    h, w = alpha.shape
    x1, x2, y1, y2 = max(0, x1), min(w, x2), max(0, y1), min(h, y2)
    if x2 <= x1 or y2 <= y1:
        return 0.0
    return float(alpha[y1:y2, x1:x2].mean())


# --- the pass in front of the face ---------------------------------------------------------

@dataclass(slots=True)
class Occlusion:
    """What `occlude` made: the frames, the coverage of the face box per frame (ground truth),
    the occluder's alpha per frame (float16) and the plan (for the CSV and the contact sheets)."""
    frames: list
    coverage: np.ndarray
    alphas: list
    plan: dict

    @property
    def peak(self) -> int:
        return int(np.argmax(self.coverage))

    @property
    def peak_coverage(self) -> float:
        return float(self.coverage.max())

    @property
    def middle(self) -> int:
        """The frame in the middle of the pass (the hand nearest the face, also for "beside")."""
        fps = self.plan["fps"]
        return min(len(self.frames) - 1, round((self.plan["t_start"] + self.plan["duration"] / 2) * fps))


def _positions(kind: str, n: int, fps: float, track: Track, shape, rng, scale: float, dy: float,
               t0: float, dur: float, side: int, tilt: float, arc: float):
    """Palm centre per frame (None outside the pass) and the hand angle per frame."""
    W = shape[1]
    reach = 2.0 * scale                                             # fingertip / thumb extent
    out = []
    angles = []
    for i in range(n):
        t = i / fps
        u = (t - t0) / dur
        if u < 0 or u > 1:
            out.append(None)
            angles.append(0.0)
            continue
        box = track.boxes[i]
        fc = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
        fw = box[2] - box[0]
        if kind == "side":                                          # in, near the face, back out
            near = fc[0] - side * (0.5 * fw + 0.55 * scale + dy)    # palm edge stops beside the box
            start = -reach if side > 0 else W + reach
            x = start + (near - start) * math.sin(math.pi * u)
            y = fc[1] + 0.15 * fw * math.sin(2 * math.pi * u)
        else:
            # fast in, slow in front of the face (x = the face centre at u = 0.5), fast out
            start = -reach if side > 0 else W + reach
            end = W + reach if side > 0 else -reach
            v = 2 * u - 1
            s = 0.3 * v + 0.7 * v ** 3
            x = fc[0] + (s * (fc[0] - start) if v < 0 else s * (end - fc[0]))
            y = fc[1] + dy + arc * scale * (1 - (2 * u - 1) ** 2)
        out.append(np.array([x, y]))
        angles.append(tilt + 0.12 * side * math.sin(math.pi * u))
    return out, angles


def occlude(frames, path_kind: str, rng: np.random.Generator, *, fps: float = 25.0,
            track: Track | None = None, detector=None, style: HandStyle | None = None,
            target: float | None = None, t_start: float | None = None) -> Occlusion:
    """A hand enters from one side ~1 s in, passes in front of the face (path_kind "across":
    peak coverage of the face box 0.4-0.9, `target` if given) or near it ("beside": never more
    than ~10%), over 0.8-1.6 s, and leaves. The face boxes come from `track` (track_faces on
    the clean frames), else are detected with `detector` (else a new CPU one). Pass the clip's
    own `fps` (read_frames returns it). Returns an Occlusion."""
    if path_kind not in ("across", "beside"):
        raise ValueError(f"path_kind must be 'across' or 'beside', not {path_kind!r}")
    if track is None:
        track = track_faces(frames, detector if detector is not None else make_face_detector())
    n = len(frames)
    fps = float(fps)
    shape = frames[0].shape
    length = n / fps
    dur = float(rng.uniform(0.8, 1.6))
    latest = max(0.2, length - dur - 0.15)
    t0 = float(t_start) if t_start is not None else float(min(rng.uniform(0.9, 1.3), latest))
    if t0 + dur > length:
        dur = max(0.5, length - t0 - 0.05)
    side = int(rng.choice([-1, 1]))                                # +1: enters from the left
    tilt = float(rng.uniform(-0.35, 0.35)) - 0.15 * side
    arc = float(rng.uniform(-0.15, 0.15))
    if style is None:
        luma = float(np.mean([f.mean() for f in frames[:: max(1, n // 8)]]))
        style = HandStyle.random(rng, brightness=float(np.clip((luma / 115) ** 0.4, 0.75, 1.15)))
    fw = float(np.median(track.boxes[:, 2] - track.boxes[:, 0]))
    fh = float(np.median(track.boxes[:, 3] - track.boxes[:, 1]))
    scale = float(rng.uniform(0.6, 0.85)) * fw
    kind = "across" if path_kind == "across" else str(rng.choice(["below", "side"]))
    want = None
    if path_kind == "across":
        want = float(target) if target is not None else float(rng.uniform(0.45, 0.85))
        scale = max(scale, (want + 0.12) * fw)                      # wide enough to reach it

    # Plan the vertical offset (across, below) or the gap (side) from coverages of the alpha
    # alone on the frames near the middle of the pass, then render the whole pass.
    def peak_cov(dy):
        pos, ang = _positions(kind, n, fps, track, shape, rng, scale, dy, t0, dur, side, tilt, arc)
        best = 0.0
        for i in near_middle:
            if pos[i] is not None:
                a = hand_alpha(shape[:2] + (3,), pos[i], scale, ang[i], style)
                best = max(best, box_coverage(a, track.boxes[i]))
        return best

    mid = (t0 + dur / 2) * fps                                      # the hand is nearest the face
    step = max(1, round(0.04 * fps))
    near_middle = sorted({min(n - 1, max(0, round(mid) + k * step)) for k in range(-3, 4)})

    if kind == "across":
        # coverage rises as the hand moves up (the arm covers below the palm): bisect dy
        grid = np.linspace(-0.9 * fh, 1.6 * fh, 11)                 # high coverage .. low coverage
        covs = np.array([peak_cov(v) for v in grid])
        above = np.flatnonzero(covs >= want)
        if not above.size:                                          # cannot reach it: the most
            lo = hi = float(grid[int(np.argmax(covs))])
        elif above[-1] == len(grid) - 1:
            lo = hi = float(grid[-1])
        else:
            lo, hi = float(grid[above[-1]]), float(grid[above[-1] + 1])
        for _ in range(8 if hi > lo else 0):
            mid = (lo + hi) / 2
            if peak_cov(mid) > want:
                lo = mid
            else:
                hi = mid
        dy = (lo + hi) / 2
    elif kind == "below":
        dy = 0.5 * fh + 1.4 * scale + float(rng.uniform(-0.3, 0.1)) * fh  # fingertips near the chin
        while peak_cov(dy) > 0.09 and dy < 3 * fh:
            dy += 0.03 * fh
    else:
        dy = float(rng.uniform(-0.15, 0.2)) * fw                     # gap between hand and box
        while peak_cov(dy) > 0.09 and dy < 2 * fw:
            dy += 0.03 * fw
    pos, ang = _positions(kind, n, fps, track, shape, rng, scale, dy, t0, dur, side, tilt, arc)
    out, alphas, cov = [], [], np.zeros(n)
    for i, f in enumerate(frames):
        if pos[i] is None:
            out.append(f)
            alphas.append(None)
            continue
        prev = pos[i - 1] if i and pos[i - 1] is not None else pos[i]
        nxt = pos[i + 1] if i + 1 < n and pos[i + 1] is not None else pos[i]
        vel = (nxt - prev) / (2.0 if (prev is not pos[i] and nxt is not pos[i]) else 1.0)
        img, a = draw_hand(f, pos[i], scale, ang[i], style=style, velocity=vel)
        out.append(img)
        alphas.append(a.astype(np.float16))
        cov[i] = box_coverage(a, track.boxes[i])
    plan = {"path_kind": path_kind, "path": kind, "t_start": t0, "duration": dur, "side": side,
            "scale_px": scale, "offset_px": float(dy), "target": want, "skin": list(style.skin),
            "arm": style.arm, "fps": fps}
    return Occlusion(out, cov, alphas, plan)


# --- the fake -------------------------------------------------------------------------------

# The five RetinaFace points of a canonical 112 x 112 aligned face (ArcFace's template), which
# the "lowres" recipe scales to its crop size.
CANONICAL_5 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]]) / 112.0
LOWRES_MARGIN = 0.12
"""Border around the canonical face in the "lowres" crop, as a fraction of its side."""


def _lowres_swap(donor, donor_lm, target, target_lm, res: int, margin: float = LOWRES_MARGIN) -> np.ndarray:
    """The swap made in an aligned res x res crop of the target (the face takes 1 - 2*margin of
    it), then warped back to the frame (upscaled) and pasted with a wider, softer mask."""
    tpl = (CANONICAL_5 * (1 - 2 * margin) + margin) * res
    m = similarity_transform(target_lm, tpl)                        # frame -> crop
    crop = cv2.warpAffine(target, m, (res, res), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
    swapped = swap_face(donor, donor_lm, crop, tpl)
    # soft paste: the swapped crop's changes, blurred a little by the up-scaling, in a soft mask
    inv = cv2.invertAffineTransform(m)
    H, W = target.shape[:2]
    back = cv2.warpAffine(swapped, inv, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    pts = inner_face_ellipse(np.asarray(target_lm, float))
    centre = pts.mean(0)
    pts = centre + (pts - centre) * 1.03
    mask = np.zeros((H, W), np.uint8)
    cv2.fillPoly(mask, [np.rint(pts * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
    span = float(np.linalg.norm(pts - centre, axis=1).min())
    mf = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), max(1.0, 0.12 * span))
    out = target.astype(np.float32) * (1 - mf[..., None]) + back.astype(np.float32) * mf[..., None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _donor_at(donor_face_rgb, donor_landmarks, i):
    if isinstance(donor_face_rgb, (list, tuple)):
        k = i % len(donor_face_rgb)
        return donor_face_rgb[k], np.asarray(donor_landmarks[k], float)
    return donor_face_rgb, np.asarray(donor_landmarks, float)


def fake_over_occluder(clean_frames, occluded_frames, donor_face_rgb, donor_landmarks, detector,
                       rng: np.random.Generator, recipe: str = "paste", *, track: Track | None = None,
                       coverage=None, lose_above: float | None = None, res: int | None = None):
    """The swapped clip: the donor's face pasted, with the landmarks of the CLEAN frame (the
    tool tracks the face), onto the OCCLUDED frame, so that inside the blend mask the pasted face
    covers the occluder (a tool without an occlusion mask).

    donor_face_rgb / donor_landmarks: one image and its 5 x 2 landmarks, or lists of them (a donor
    clip, used frame by frame, cycling). Pass occluded_frames=clean_frames for the swap without
    an occluder. recipe: "paste" (every frame), "flicker" (where the occluder covers more than
    `lose_above` of the face box, 0.45-0.6 drawn from rng when None, the tool loses the face and
    the occluded original shows through; needs `coverage` per frame, else the frames where
    `detector` finds no face in the occluded frame count as lost), "lowres" (aligned crop of
    `res` px, 128-256 drawn from rng but at most 0.6 x the face crop in the frame, scaled up and
    pasted softly). Returns the list of frames."""
    if recipe not in ("paste", "flicker", "lowres"):
        raise ValueError(f"unknown recipe {recipe!r}")
    if track is None:
        track = track_faces(clean_frames, detector)
    n = len(clean_frames)
    lost = np.zeros(n, bool)
    if recipe == "flicker":
        thr = float(lose_above) if lose_above is not None else float(rng.uniform(0.45, 0.6))
        if coverage is not None:
            cov = np.asarray(coverage, float)
            if lose_above is None:                                  # always lose it near the peak
                thr = min(thr, 0.8 * float(cov.max()))
            lost = cov > thr
        else:
            lost = np.array([not detector.detect(f) for f in occluded_frames])
    if recipe == "lowres" and res is None:
        eye = float(np.median(np.linalg.norm(track.landmarks[:, 1] - track.landmarks[:, 0], axis=1)))
        tpl_eye = float(np.linalg.norm(CANONICAL_5[1] - CANONICAL_5[0])) * (1 - 2 * LOWRES_MARGIN)
        crop_px = eye / tpl_eye                                     # the crop's side in frame px
        res = int(min(rng.choice([128, 160, 192, 224, 256]), max(64, 0.6 * crop_px)))
    out = []
    for i in range(n):
        target = np.asarray(occluded_frames[i], np.uint8)
        if lost[i]:
            out.append(target)
            continue
        d, dl = _donor_at(donor_face_rgb, donor_landmarks, i)
        if recipe == "lowres":
            out.append(_lowres_swap(d, dl, target, track.landmarks[i], int(res)))
        else:
            out.append(swap_face(d, dl, target, track.landmarks[i]))
    return out


def donor_from_clip(path, detector, max_seconds: float | None = 4.0, max_side: int | None = 640):
    """Frames of another talking-face clip and their landmarks (frames without a face dropped),
    cropped around the face to keep them small: (list of RGB, list of 5 x 2 landmarks)."""
    frames, _ = read_frames(path, max_seconds, max_side)
    imgs, lms = [], []
    for f in frames:
        faces = detector.detect(f)
        if not faces:
            continue
        best = max(faces, key=lambda x: x.width * x.height)
        x1, y1, x2, y2 = best.box
        m = 0.4 * max(x2 - x1, y2 - y1)
        cx0, cy0 = max(0, int(x1 - m)), max(0, int(y1 - m))
        cx1, cy1 = min(f.shape[1], int(x2 + m)), min(f.shape[0], int(y2 + m))
        imgs.append(np.ascontiguousarray(f[cy0:cy1, cx0:cx1]))
        lms.append(best.landmarks - np.array([cx0, cy0], np.float32))
    if not imgs:
        raise ValueError(f"no face in donor clip {path}")
    return imgs, lms


# --- a tiny pair for CI ---------------------------------------------------------------------

TINY_CLIP = "grid/lbbc2a.mpg"
TINY_DONOR = "grid/bbaf2n.mpg"


def tiny_pair(tmpdir, seed: int = 0, recipe: str = "paste", seconds: float = 2.6, detector=None):
    """(real_path, fake_path): a ~2.6 s 360x288 GRID clip (CC BY 4.0) with a hand passing across
    the face (peak coverage ~0.7) and its fake (the donor from another GRID clip pasted over the
    hand). Also writes <real stem>.json beside them: coverage per frame, the peak frame, fps,
    the sources. A few seconds of CPU."""
    import pytest

    clip, donor_clip = TALKING_FACES / TINY_CLIP, TALKING_FACES / TINY_DONOR
    if not clip.is_file() or not donor_clip.is_file():
        pytest.skip(f"talking-faces clips not found at {TALKING_FACES} (../shared/data beside the repo)")
    tmpdir = Path(tmpdir)
    tmpdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    fd = detector or make_face_detector()
    frames, fps = read_frames(clip, seconds)
    track = track_faces(frames, fd)
    occ = occlude(frames, "across", rng, fps=float(fps), track=track, target=0.7, t_start=0.8)
    dimgs, dlms = donor_from_clip(donor_clip, fd, max_seconds=seconds)
    fake = fake_over_occluder(frames, occ.frames, dimgs, dlms, fd, rng, recipe, track=track,
                              coverage=occ.coverage)
    real_path = write_mp4(occ.frames, fps, tmpdir / f"tiny-real-{seed}.mp4", crf=20, preset="ultrafast")
    fake_path = write_mp4(fake, fps, tmpdir / f"tiny-fake-{recipe}-{seed}.mp4", crf=20, preset="ultrafast")
    meta = {"fps": float(fps), "frames": len(frames), "coverage": [round(float(c), 4) for c in occ.coverage],
            "peak": occ.peak, "peak_coverage": occ.peak_coverage, "recipe": recipe, "clip": TINY_CLIP,
            "donor": TINY_DONOR, "licence": LICENCES["grid"], "plan": occ.plan,
            "boxes": track.boxes.round(2).tolist()}
    (tmpdir / f"tiny-real-{seed}.json").write_text(json.dumps(meta))
    return real_path, fake_path
