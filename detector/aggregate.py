"""From face scores to one item score and a label. Pure functions, no I/O."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from detector.result import FrameEvidence, Label

TRACK_IOU = 0.3
"""Two faces in consecutive scored frames are the same person when their boxes overlap this much."""
TRACK_MIN_SHARE = 0.25
"""A track seen in fewer than this share of the frames with a face (a passer-by, a false
detection) counts only when no longer track exists."""


def item_score(frames: list[FrameEvidence], top_k: int) -> float | None:
    """Mean of the top-k frames' highest face score; None when no face was scored.

    A swap is often visible in some frames only (profile views, motion blur hide it in
    others), so the item takes its worst frames rather than the mean of all of them; k > 1
    keeps one odd frame from deciding alone.
    """
    per_frame = sorted((s for f in frames if (s := f.max_score) is not None), reverse=True)
    if not per_frame:
        return None
    k = max(1, min(top_k, len(per_frame)))
    return sum(per_frame[:k]) / k


def _iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def face_tracks(frames: list[FrameEvidence], min_iou: float = TRACK_IOU) -> list[list[float]]:
    """The scored faces linked across the sampled frames into tracks (one person each), as lists
    of their scores. Greedy: each face joins the track whose last box it overlaps most."""
    tracks: list[tuple[list, list[float]]] = []  # (last box, scores)
    for fr in frames:
        taken: set[int] = set()
        for face in sorted((f for f in fr.faces if f.fake_score is not None), key=lambda f: -f.detection_score):
            best, best_iou = None, min_iou
            for i, (box, _) in enumerate(tracks):
                if i not in taken and (v := _iou(box, face.box)) >= best_iou:
                    best, best_iou = i, v
            if best is None:
                tracks.append((face.box, [face.fake_score]))
                taken.add(len(tracks) - 1)
            else:
                tracks[best] = (face.box, tracks[best][1] + [face.fake_score])
                taken.add(best)
    return [scores for _, scores in tracks]


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))


def track_score(frames: list[FrameEvidence], offset: float = 0.0, temperature: float = 1.0,
                top_k: int | None = None) -> float | None:
    """A video's score from its face tracks: for each person, the mean logit of their face over
    the sampled frames (with `top_k`, over their k highest frames only), the highest person,
    then the model's video calibration sigmoid((z - offset) / temperature), fitted on real
    videos (model.json `video`). People are kept apart (two people's best frames never add up),
    and a face seen in few frames (a passer-by, a false detection) does not decide while a
    longer track exists. None when no face was scored."""
    tracks = face_tracks(frames)
    if not tracks:
        return None
    longest = max(len(t) for t in tracks)
    kept = [t for t in tracks if len(t) >= TRACK_MIN_SHARE * longest] or tracks
    z = -math.inf
    for t in kept:
        logits = sorted((_logit(s) for s in t), reverse=True)
        if top_k is not None:
            logits = logits[:max(1, top_k)]
        z = max(z, sum(logits) / len(logits))
    return _sigmoid((z - offset) / temperature)


_NORMAL = NormalDist()


def face_standard_score(face_score: float, width: float, picture) -> float:
    """How many standard deviations a face's logit lies above the model's real faces (of its
    width, for size_adjusted); `picture` is model.json's PictureSpec."""
    if picture.aggregate != "size_adjusted":
        return (_logit(face_score) - picture.reference_mean) / picture.reference_std
    logw = math.log(max(width, 1.0))
    knots = np.log(picture.widths)  # linear in log width between the knots, flat beyond them
    mean = float(np.interp(logw, knots, picture.mean))
    std = float(np.interp(logw, knots, picture.std))
    return (_logit(face_score) - mean) / std


def picture_score(frames: list[FrameEvidence], picture) -> float | None:
    """A still picture's score as its model says (`picture`: model.json's PictureSpec, or None).

    max: the highest face score. count_adjusted / size_adjusted: the most unusual face, t standard
    deviations above the model's real faces (of its width); with n faces in the picture the
    chance that at least one of n real faces lies that far out is 1 - (1 - p)^n (p: the normal
    tail beyond t); that chance is turned back into a standard score and given the real faces'
    scale. One face keeps its score (count_adjusted); four real faces no longer have four chances
    to cross the threshold.
    """
    faces = [f for fr in frames for f in fr.faces if f.fake_score is not None]
    if not faces:
        return None
    if picture is None or picture.aggregate == "max":
        return max(f.fake_score for f in faces)
    t = max(face_standard_score(f.fake_score, f.box[2] - f.box[0], picture) for f in faces)
    n = len(faces)
    if n > 1:
        tail = 0.5 * math.erfc(t / math.sqrt(2))          # P(a real face lies beyond t)
        tail = -math.expm1(n * math.log1p(-min(tail, 1 - 1e-16)))  # ... at least one of n
        t = -_NORMAL.inv_cdf(min(max(tail, 1e-300), 1 - 1e-16))
    return _sigmoid(picture.reference_mean + picture.reference_std * t)


def video_score(frames: list[FrameEvidence], top_k: int, video) -> float | None:
    """A video's item score as its model says (`video` is model.json's VideoSpec, or None: top-k)."""
    if video is None or video.aggregate == "top_k":
        return item_score(frames, top_k)
    return track_score(frames, video.offset, video.temperature,
                       top_k if video.aggregate == "track_top_k" else None)


def label_for(score: float | None, threshold: float, frames: list[FrameEvidence],
              kind: str, picture_aggregate: str = "max") -> tuple[Label, list[str]]:
    """Label and human-readable reasons. No face seen is `no_face`, never authentic.
    `picture_aggregate`: how `picture_score` read a picture's faces (model.json `picture`)."""
    n = len(frames)
    where = "the image" if kind == "image" else f"{n} sampled frame{'s' if n != 1 else ''}"
    if score is None:
        return Label.NO_FACE, [f"no face found in {where}"]
    faces = sum(len(f.faces) for f in frames)
    with_face = sum(1 for f in frames if f.faces)
    over = sum(1 for f in frames if (s := f.max_score) is not None and s >= threshold)
    seen = (f"{faces} face{'s' if faces != 1 else ''} in {with_face} of {n} frames"
            if kind == "video" else f"{faces} face{'s' if faces != 1 else ''} in the image")
    reading = None
    if kind != "video" and picture_aggregate != "max":
        top = max((s for fr in frames if (s := fr.max_score) is not None), default=0.0)
        if picture_aggregate == "size_adjusted":
            reading = (f"highest face score {top:.2f}, read against real faces of its size"
                       + (f" and corrected for {faces} faces in the image" if faces > 1 else ""))
        elif faces > 1:
            reading = f"highest face score {top:.2f}, corrected for {faces} faces in the image"
    if score >= threshold:
        if kind == "video":
            detail = f"{over} of {with_face} frames with a face score >= {threshold:.2f}"
        else:
            detail = reading or f"highest face score >= {threshold:.2f}"
        return Label.SUSPECTED_FAKE, [
            f"manipulation score {score:.2f} is at or above the model's threshold {threshold:.2f}",
            detail, seen,
        ]
    return Label.LIKELY_AUTHENTIC, [
        f"manipulation score {score:.2f} is below the model's threshold {threshold:.2f}",
        *([reading] if reading else []), seen,
    ]


def with_occlusion(score: float | None, occ) -> float | None:
    """The item score with the hand-over-the-face check (detector/occlusion.py): an occluder cut
    off at the face's outline is evidence of a pasted face on its own, so the item takes the
    higher of the two; a face that behaved like a real one never lowers the classifier's word."""
    if score is None or occ is None or not occ.checked or occ.score is None:
        return score
    return max(score, occ.score)


def occlusion_reasons(occ, base: float | None, score: float | None, threshold: float) -> list[str]:
    """The check's reasons, and a line when it raised the item over the threshold."""
    reasons = list(occ.reasons)
    if base is not None and score is not None and base < threshold <= score:
        reasons.append(f"the occlusion check raised the score from {base:.2f} to {score:.2f}")
    return reasons
