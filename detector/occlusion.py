"""The hand-over-the-face check: does the face behave like a real one when something passes in
front of it?

A face swap is pasted over the frame inside a mask around the face. When a hand (a cup, a
phone) passes in front of the face, a real face disappears behind it; a tool without an
occlusion mask pastes the generated face over the hand, so the hand is cut off at the edge of
the mask while the face stays whole, and a tool that loses the face for a few frames lets the
real face flicker through. This module looks for those moments in a sequence of frames and
scores each one. Pure numpy and OpenCV on small copies of the frames the pipeline has already
decoded; no model of its own.

How (all in a face-centred, scale-normalised window that follows the tracked face):
1. Track the main face through the frames (the largest face; boxes smoothed, gaps bridged).
2. Crop a window of WINDOW x the face box around it from each frame, WINDOW_PIXELS square.
3. Reference: the per-pixel median of the quietest frames (the face as it is when nothing
   covers it). Change map: how far each pixel is from it, against the clip's own noise level.
4. An event is a run of frames where something new covers the face's surroundings or the face.
   For each: `covered`, the share of the face box that changed at the peak; and the rings of the
   face (its outline band, its centre) say whether the thing that reached the face's outline
   went on into the face (a real occluder) or stopped at it with the face intact (pasted over).
5. The event's score: 0 when the face behaved like a real one (the occluder went on into the face,
   or the face was lost behind it), towards 1 when the occluder stopped at the face's outline
   while the face stayed detected and whole.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

SMALL_SIDE = 256
"""Frames are kept for the check at this longer side (a 640x480 frame is 57 kB of RGB)."""

WINDOW = 2.0
"""The window around the face, as a multiple of the face box's larger side."""

WINDOW_PIXELS = 64
"""Side of the face-centred window the change maps are computed in."""

MIN_TRACKED = 0.5
"""The check runs only when the main face was found in at least this share of the frames."""

EVENT_MIN_OUTLINE = 0.18
"""An event starts where the face's outline band or centre is this much covered by change."""

EVENT_MIN_CENTRE = 0.25

_ANGLES = 16


@dataclass(slots=True)
class Track:
    """One frame as the check sees it: a small copy, and the main face in its pixels."""

    timestamp: float
    small: np.ndarray
    """RGB uint8, longer side <= SMALL_SIDE."""
    scale: float
    """Original pixels per small pixel."""
    faces: list[tuple[list[float], float]] = field(default_factory=list)
    """(box x1 y1 x2 y2 in ORIGINAL pixels, detection score) of each face found."""


@dataclass(slots=True)
class Event:
    start: float
    end: float
    peak: float
    covered: float
    """Share of the face box covered at the peak (0..1)."""
    score: float
    """0 = the face behaved like a real one through the event, 1 = like a pasted one."""
    outline: float
    """How much of the face's outline band the occluder covered at most."""
    centre: float
    """How much of the face's centre it covered at most."""
    face_lost: bool
    """The face detector lost the face behind the occluder (what a real face does)."""


@dataclass(slots=True)
class OcclusionResult:
    checked: bool
    frames: int
    fps: float | None
    events: list[Event] = field(default_factory=list)
    score: float | None = None
    """The highest event score; None when nothing passed in front of the face."""
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for e in d["events"]:
            for k in ("start", "end", "peak"):
                e[k] = round(e[k], 3)
            for k in ("covered", "score", "outline", "centre"):
                e[k] = round(e[k], 3)
        if d["score"] is not None:
            d["score"] = round(d["score"], 4)
        if d["fps"] is not None:
            d["fps"] = round(d["fps"], 2)
        return d


def small_copy(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """A copy of the frame with its longer side at most SMALL_SIDE, and its scale."""
    h, w = rgb.shape[:2]
    s = max(h, w) / SMALL_SIDE
    if s <= 1:
        return rgb.copy(), 1.0
    nw, nh = max(1, round(w / s)), max(1, round(h / s))
    return cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA), w / nw


def check(tracks: list[Track]) -> OcclusionResult:
    n = len(tracks)
    fps = _fps(tracks)
    if n < 4:
        return OcclusionResult(False, n, fps, reasons=["too few frames for the hand-over-the-face check"])
    boxes, scores = _main_face(tracks)
    found = [b is not None for b in boxes]
    if sum(found) < max(3, MIN_TRACKED * n):
        return OcclusionResult(False, n, fps, reasons=["the face was not tracked through enough frames"])
    smooth = _smooth_boxes(boxes)
    windows = np.stack([_window(t, b) for t, b in zip(tracks, smooth)])
    change = _change_maps(windows)
    rings = _rings()
    outline = (change & rings["outline"]).sum((1, 2)) / rings["outline"].sum()
    centre = (change & rings["centre"]).sum((1, 2)) / rings["centre"].sum()
    around = (change & rings["around"]).sum((1, 2)) / rings["around"].sum()
    box = (change & rings["box"]).sum((1, 2)) / rings["box"].sum()
    cut = _cut(change, rings)
    active = (outline >= EVENT_MIN_OUTLINE) | (centre >= EVENT_MIN_CENTRE) | (
        ~np.array(found) & _between_found(found))
    events = []
    for lo, hi in _runs(active):
        idx = range(lo, hi + 1)
        peak = max(idx, key=lambda i: box[i] + (0 if found[i] else 1))
        lost = any(not found[i] for i in idx)
        min_score = min((scores[i] for i in idx if scores[i] is not None), default=0.0)
        o, c, a = float(max(outline[i] for i in idx)), float(max(centre[i] for i in idx)), float(max(around[i] for i in idx))
        # A real occluder is cut at the outline only while it enters; a pasted face cuts it all along.
        k = float(np.mean([cut[i] >= 3 / _ANGLES for i in idx])) if len(idx) >= 3 else 0.0
        ev_score = _event_score(o, c, a, k, lost, min_score)
        events.append(Event(start=tracks[lo].timestamp, end=tracks[hi].timestamp, peak=tracks[peak].timestamp,
                            covered=float(min(1.0, box[peak])) if found[peak] else float(max(box[peak], 0.5)),
                            score=ev_score, outline=o, centre=c, face_lost=lost))
    result = OcclusionResult(True, n, fps, events)
    if not events:
        result.reasons = ["nothing passed in front of the face"]
        return result
    worst = max(events, key=lambda e: e.score)
    result.score = worst.score
    result.reasons = [_describe(worst, len(events))]
    return result


# --- internals ------------------------------------------------------------------------------

def _fps(tracks: list[Track]) -> float | None:
    if len(tracks) < 2:
        return None
    span = tracks[-1].timestamp - tracks[0].timestamp
    return (len(tracks) - 1) / span if span > 0 else None


def _main_face(tracks: list[Track]) -> tuple[list[np.ndarray | None], list[float | None]]:
    """Per frame, the face that continues the track (nearest to the last one), in small pixels."""
    boxes: list[np.ndarray | None] = []
    scores: list[float | None] = []
    last = None
    for t in tracks:
        cands = [(np.asarray(b, dtype=np.float32) / t.scale, s) for b, s in t.faces]
        if not cands:
            boxes.append(None)
            scores.append(None)
            continue
        if last is None:
            b, s = max(cands, key=lambda c: (c[0][2] - c[0][0]) * (c[0][3] - c[0][1]))
        else:
            size = max(last[2] - last[0], last[3] - last[1])
            b, s = min(cands, key=lambda c: np.abs(_centre(c[0]) - _centre(last)).sum())
            if np.abs(_centre(b) - _centre(last)).sum() > size:  # another face: this one is lost
                boxes.append(None)
                scores.append(None)
                continue
        boxes.append(b)
        scores.append(float(s))
        last = b
    return boxes, scores


def _centre(b: np.ndarray) -> np.ndarray:
    return np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2], dtype=np.float32)


def _smooth_boxes(boxes: list[np.ndarray | None]) -> list[np.ndarray]:
    """Gaps bridged by interpolation, then a running median over 5 frames (a face box jitters,
    and an occluder shifts it: the window must follow the head, not the hand)."""
    n = len(boxes)
    idx = [i for i, b in enumerate(boxes) if b is not None]
    arr = np.stack([boxes[i] for i in idx])
    full = np.stack([np.interp(np.arange(n), idx, arr[:, k]) for k in range(4)], 1)
    out = []
    for i in range(n):
        lo, hi = max(0, i - 2), min(n, i + 3)
        out.append(np.median(full[lo:hi], 0))
    # One window size for the whole track: the median face size.
    sizes = np.array([max(b[2] - b[0], b[3] - b[1]) for b in out])
    side = float(np.median(sizes))
    return [np.array([*_centre(b), side], dtype=np.float32) for b in out]


def _window(t: Track, cbox: np.ndarray) -> np.ndarray:
    """The face-centred window (WINDOW_PIXELS square, Lab float32)."""
    cx, cy, side = (float(v) for v in cbox)
    half = WINDOW * side / 2
    s = WINDOW_PIXELS / (2 * half)
    m = np.array([[s, 0, WINDOW_PIXELS / 2 - s * cx], [0, s, WINDOW_PIXELS / 2 - s * cy]], dtype=np.float32)
    win = cv2.warpAffine(t.small, m, (WINDOW_PIXELS, WINDOW_PIXELS), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    return cv2.cvtColor(win, cv2.COLOR_RGB2LAB).astype(np.float32)


def _change_maps(windows: np.ndarray) -> np.ndarray:
    """Boolean (frames, P, P): where each window differs from the face as it is when uncovered."""
    ref = np.median(windows, 0)
    for _ in range(2):  # the reference from the quietest half of the frames
        d = _distance(windows, ref)
        total = d.mean((1, 2))
        quiet = total <= np.median(total)
        ref = np.median(windows[quiet], 0)
    d = _distance(windows, ref)
    total = d.mean((1, 2))
    quiet = d[total <= np.median(total)]
    noise = float(np.percentile(quiet, 90)) if quiet.size else 0.0
    thr = max(14.0, 1.5 * noise)
    change = d > thr
    kernel = np.ones((3, 3), np.uint8)
    return np.stack([cv2.morphologyEx(c.astype(np.uint8), cv2.MORPH_OPEN, kernel) > 0 for c in change])


def _distance(windows: np.ndarray, ref: np.ndarray) -> np.ndarray:
    diff = windows - ref
    diff[..., 0] *= 0.5  # lightness counts half: shading and exposure drift move it most
    d = np.sqrt((diff ** 2).sum(-1))
    return np.stack([cv2.GaussianBlur(x, (0, 0), 1.0) for x in d])


def _rings() -> dict[str, np.ndarray]:
    """Regions of the window, by the distance from the face's centre in face-box half-sides."""
    p = WINDOW_PIXELS
    yy, xx = np.mgrid[0:p, 0:p].astype(np.float32) + 0.5
    half_box = p / WINDOW / 2
    # The face's centre sits a little below the box centre (the box includes the forehead).
    r = np.sqrt(((xx - p / 2) / (0.85 * half_box)) ** 2 + ((yy - p / 2 - 0.05 * p / WINDOW) / half_box) ** 2)
    ang = (np.arctan2(yy - p / 2, xx - p / 2) + math.pi) / (2 * math.pi) * _ANGLES
    return {
        "centre": r < 0.5,
        "outline": (r >= 0.75) & (r < 1.1),
        "inside": (r >= 0.45) & (r < 0.75),
        "around": (r >= 1.15) & (r < 1.9),
        "box": r < 1.0,
        "r": r,
        "angle": np.minimum(ang.astype(np.int32), _ANGLES - 1),
    }


def _cut(change: np.ndarray, rings: dict[str, np.ndarray]) -> np.ndarray:
    """Per frame, the share of directions in which the occluder covers the face's outline but not
    the band just inside it: where an occluder is cut off at the edge of a pasted face."""
    ang = rings["angle"]
    out = np.zeros(len(change), dtype=np.float32)
    for i, c in enumerate(change):
        o = np.bincount(ang[rings["outline"]], c[rings["outline"]], _ANGLES) / np.maximum(
            np.bincount(ang[rings["outline"]], minlength=_ANGLES), 1)
        n = np.bincount(ang[rings["inside"]], c[rings["inside"]], _ANGLES) / np.maximum(
            np.bincount(ang[rings["inside"]], minlength=_ANGLES), 1)
        out[i] = float(((o >= 0.5) & (n <= 0.15)).sum()) / _ANGLES
    return out


def _between_found(found: list[bool]) -> np.ndarray:
    """True for frames with a found face both somewhere before and somewhere after."""
    f = np.array(found)
    before = np.maximum.accumulate(f)
    after = np.maximum.accumulate(f[::-1])[::-1]
    return before & after


def _runs(mask: np.ndarray, gap: int = 1) -> list[tuple[int, int]]:
    """Index ranges of True runs, runs separated by at most `gap` False frames merged."""
    runs: list[list[int]] = []
    for i, v in enumerate(mask):
        if not v:
            continue
        if runs and i - runs[-1][1] <= gap + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return [(a, b) for a, b in runs]


def _event_score(outline: float, centre: float, around: float, cut: float, lost: bool, min_det: float) -> float:
    """0..1: how much the event looks like an occluder pasted over (see the module docstring)."""
    if lost:
        return 0.0
    reach = min(1.0, outline / 0.5)  # the occluder reached the face's outline
    went_in = min(1.0, centre / max(0.15, 0.6 * outline))  # and went on into the face
    s = reach * (1.0 - went_in)
    s = max(s, reach * cut)
    return float(max(0.0, min(1.0, s)))


def _describe(e: Event, n: int) -> str:
    where = f"{e.start:.1f}-{e.end:.1f} s"
    many = f" (worst of {n})" if n > 1 else ""
    if e.score >= 0.5:
        return (f"occlusion: something covered {e.covered:.0%} of the face at {e.peak:.1f} s{many} and was cut off "
                f"at the face's outline while the face stayed whole ({where}): what a pasted face does")
    return (f"occlusion: something passed in front of the face ({where}, {e.covered:.0%} covered){many} "
            f"and the face behaved like a real one")
