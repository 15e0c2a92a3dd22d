"""The hand-over-the-face check: does the face behave like a real one when something passes in
front of it?

A face swap is pasted over the frame inside a mask around the face. When a hand (a cup, a
phone) passes in front of a real face, the face gives way: the face detector loses it or its
confidence falls, and its landmarks jump. A tool without an occlusion mask keeps drawing the
generated face over the hand (or a ghost of it, when its generator sees the hand), so the face
stays found, confident and steady while the hand covers its outline. This module finds those
moments in a sequence of frames and scores each one. Pure numpy and OpenCV on small copies of
the frames the pipeline has already decoded, and the face detector's own boxes, scores and
landmarks; no model of its own.

How:
1. Track the main face through the frames (boxes smoothed over 5 frames, gaps bridged).
2. Crop a window of WINDOW x the face box around it from each frame, WINDOW_PIXELS square.
3. Reference: the per-pixel median of the quietest frames (the face as it is when nothing
   covers it). Change map: where each window differs from it, against the clip's own noise.
4. An event is a run of frames where something covers the face's outline band or its centre,
   or the face is lost between frames where it was found. `covered`: the share of the face box
   that changed at the peak.
5. The event's score (event_score): how far the occluder reached the face's outline, times how
   steady the face stayed (found, confident, landmarks still): 0 when it gave way like a real
   face, towards 1 when it stayed whole like a pasted one.

Where it fails: a tool with an occlusion mask (the hand kept in front of the swap) passes; a
tool that loses the face under the hand shows the real face there, which gives way like a real
one (the flicker between the two faces is not scored); a hand beside the face that covers the
outline band without touching the face can look pasted (bench/occlusion.py measures both).
"""

from __future__ import annotations

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

PASTED_AT = 0.5
"""An event scored at least this is read as a pasted face (reasons, pages, a live session's
rolling score); below it, as a face that behaved like a real one."""

MIN_TRACKED = 0.5
"""The check runs only when the main face was found in at least this share of the frames."""

EVENT_MIN_OUTLINE = 0.18
"""An event starts where the face's outline band or centre is this much covered by change."""

EVENT_MIN_CENTRE = 0.25



@dataclass(slots=True)
class Track:
    """One frame as the check sees it: a small copy, and the main face in its pixels."""

    timestamp: float
    small: np.ndarray
    """RGB uint8, longer side <= SMALL_SIDE."""
    scale: float
    """Original pixels per small pixel."""
    faces: list[tuple] = field(default_factory=list)
    """(box x1 y1 x2 y2, detection score, 5 landmarks), in ORIGINAL pixels, of each face found."""


@dataclass(slots=True)
class Event:
    start: float
    end: float
    peak: float
    covered: float
    """Share of the face box covered at the peak (0..1)."""
    score: float
    """0 = the face behaved like a real one through the event, 1 = like a pasted one."""
    face_lost: bool
    """The face detector lost the face behind the occluder (what a real face does)."""
    features: dict[str, float] = field(default_factory=dict)
    """What the check measured (FEATURES), for the evidence and for fitting event_score."""


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
            for k in ("start", "end", "peak", "covered", "score"):
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
    boxes, scores, marks = _main_face(tracks)
    found = [b is not None for b in boxes]
    if sum(found) < max(3, MIN_TRACKED * n):
        return OcclusionResult(False, n, fps, reasons=["the face was not tracked through enough frames"])
    smooth = _smooth_boxes(boxes)
    windows = np.stack([_window(t, b) for t, b in zip(tracks, smooth)])
    change = _change_maps(windows)
    rings = _rings()
    cov = {k: (change & rings[k]).sum((1, 2)) / rings[k].sum() for k in ("outline", "centre", "box")}
    jitter = _landmark_jitter(marks, smooth)
    quiet_jitter = float(np.median([j for j in jitter if j is not None] or [0.0]))
    quiet_score = float(np.median([x for x in scores if x is not None]))
    active = (cov["outline"] >= EVENT_MIN_OUTLINE) | (cov["centre"] >= EVENT_MIN_CENTRE) | (
        ~np.array(found) & _between_found(found))
    events = []
    for lo, hi in _runs(active):
        idx = list(range(lo, hi + 1))
        peak = max(idx, key=lambda i: cov["box"][i] + (0 if found[i] else 1))
        f = _features(idx, cov, found, scores, jitter, quiet_jitter, quiet_score)
        covered = float(min(1.0, cov["box"][peak])) if found[peak] else float(max(cov["box"][peak], 0.5))
        events.append(Event(start=tracks[lo].timestamp, end=tracks[hi].timestamp, peak=tracks[peak].timestamp,
                            covered=covered, score=event_score(f),
                            face_lost=f["lost"] > 0, features={k: round(float(v), 4) for k, v in f.items()}))
    result = OcclusionResult(True, n, fps, events)
    if not events:
        result.reasons = ["nothing passed in front of the face"]
        return result
    worst = max(events, key=lambda e: e.score)
    result.score = worst.score
    result.reasons = [_describe(worst, len(events))]
    return result


FEATURES = ("outline", "centre", "lost", "det_drop", "jitter", "frames")
"""What the check measures of each event (see _features); event_score weighs them."""


def _features(idx, cov, found, scores, jitter, quiet_jitter, quiet_score) -> dict[str, float]:
    """outline / centre: the most of the face's outline band / centre the occluder covered; lost:
    the share of the event's frames where the face detector lost the face; det_drop: how far its
    confidence fell below the clip's usual; jitter: how far the landmarks jumped off their
    running median (face-box sides) beyond the clip's usual; frames: the event's length."""
    found_scores = [scores[i] for i in idx if scores[i] is not None]
    js = [jitter[i] for i in idx if jitter[i] is not None]
    return {"outline": float(max(cov["outline"][i] for i in idx)), "centre": float(max(cov["centre"][i] for i in idx)),
            "lost": float(np.mean([not found[i] for i in idx])),
            "det_drop": max(0.0, quiet_score - min(found_scores)) if found_scores else 1.0,
            "jitter": max(0.0, (max(js) if js else 0.0) - quiet_jitter), "frames": float(len(idx))}


STEADY_DET_DROP = 0.05
"""A fall of the face detector's confidence by this much counts as the face giving way."""
STEADY_JITTER = 0.08
"""Landmarks moving by this share of the face box off their running median: the face giving way."""
REACH_OUTLINE = 0.35
"""An occluder covering this much of the face's outline band reached the face in full."""


def event_score(f: dict[str, float]) -> float:
    """0..1 from the event's features (FEATURES). A real face gives way behind an occluder that
    reaches it: the face detector loses it or its confidence falls, its landmarks jump. A pasted
    face stays found, confident and steady (the tool keeps drawing it over the hand), or, when the
    tool loses it, the real face flickers out from under the swap (a jump of the uncovered face).
    The thresholds are set on the GRID clips of the occlusion corpus (bench/occlusion.py); the
    studio-news clips are the held-out check."""
    reach = min(1.0, f["outline"] / REACH_OUTLINE)
    steady = ((1.0 - f["lost"]) * (1.0 - min(1.0, f["det_drop"] / STEADY_DET_DROP))
              * (1.0 - min(1.0, f["jitter"] / STEADY_JITTER)))
    return float(max(0.0, min(1.0, reach * steady)))


# --- internals ------------------------------------------------------------------------------

def _fps(tracks: list[Track]) -> float | None:
    if len(tracks) < 2:
        return None
    span = tracks[-1].timestamp - tracks[0].timestamp
    return (len(tracks) - 1) / span if span > 0 else None


def _main_face(tracks: list[Track]):
    """Per frame, the face that continues the track (nearest to the last one), in small pixels:
    boxes, detection scores and landmarks (None where the face was not found)."""
    boxes: list[np.ndarray | None] = []
    scores: list[float | None] = []
    marks: list[np.ndarray | None] = []
    last = None
    for t in tracks:
        cands = [(np.asarray(f[0], dtype=np.float32) / t.scale, f[1],
                  np.asarray(f[2], dtype=np.float32) / t.scale if len(f) > 2 else None) for f in t.faces]
        pick = None
        if cands and last is None:
            pick = max(cands, key=lambda c: (c[0][2] - c[0][0]) * (c[0][3] - c[0][1]))
        elif cands:
            size = max(last[2] - last[0], last[3] - last[1])
            near = min(cands, key=lambda c: np.abs(_centre(c[0]) - _centre(last)).sum())
            if np.abs(_centre(near[0]) - _centre(last)).sum() <= size:  # else another face: this one is lost
                pick = near
        if pick is None:
            boxes.append(None)
            scores.append(None)
            marks.append(None)
            continue
        boxes.append(pick[0])
        scores.append(float(pick[1]))
        marks.append(pick[2])
        last = pick[0]
    return boxes, scores, marks


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
    return {"centre": r < 0.5, "outline": (r >= 0.75) & (r < 1.1), "box": r < 1.0}


def _landmark_jitter(marks, smooth) -> list[float | None]:
    """Per frame, how far the landmarks moved from the running median of their positions, in
    face-box sides: a face half behind a hand loses its landmarks' steadiness."""
    rel = []
    for m, b in zip(marks, smooth):
        rel.append(None if m is None else (m - b[:2]) / max(1e-3, float(b[2])))
    out: list[float | None] = []
    n = len(rel)
    for i, r in enumerate(rel):
        if r is None:
            out.append(None)
            continue
        near = [rel[j] for j in range(max(0, i - 3), min(n, i + 4)) if rel[j] is not None]
        out.append(float(np.abs(r - np.median(near, 0)).max()))
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


def _describe(e: Event, n: int) -> str:
    where = f"{e.start:.1f}-{e.end:.1f} s"
    many = f" (worst of {n})" if n > 1 else ""
    if e.score >= PASTED_AT:
        return (f"occlusion: something covered {e.covered:.0%} of the face at {e.peak:.1f} s{many} and the face "
                f"stayed whole and steady behind it ({where}): what a face pasted over the frame does")
    return (f"occlusion: something passed in front of the face ({where}, {e.covered:.0%} covered){many} "
            f"and the face behaved like a real one")
