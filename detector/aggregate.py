"""From face scores to one item score and a label. Pure functions, no I/O."""

from __future__ import annotations

from detector.result import FrameEvidence, Label


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


def label_for(score: float | None, threshold: float, frames: list[FrameEvidence],
              kind: str) -> tuple[Label, list[str]]:
    """Label and human-readable reasons. No face seen is `no_face`, never authentic."""
    n = len(frames)
    where = "the image" if kind == "image" else f"{n} sampled frame{'s' if n != 1 else ''}"
    if score is None:
        return Label.NO_FACE, [f"no face found in {where}"]
    faces = sum(len(f.faces) for f in frames)
    with_face = sum(1 for f in frames if f.faces)
    over = sum(1 for f in frames if (s := f.max_score) is not None and s >= threshold)
    seen = (f"{faces} face{'s' if faces != 1 else ''} in {with_face} of {n} frames"
            if kind == "video" else f"{faces} face{'s' if faces != 1 else ''} in the image")
    if score >= threshold:
        detail = (f"{over} of {with_face} frames with a face score >= {threshold:.2f}"
                  if kind == "video" else f"highest face score >= {threshold:.2f}")
        return Label.SUSPECTED_FAKE, [
            f"manipulation score {score:.2f} is at or above the model's threshold {threshold:.2f}",
            detail, seen,
        ]
    return Label.LIKELY_AUTHENTIC, [
        f"manipulation score {score:.2f} is below the model's threshold {threshold:.2f}", seen,
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
