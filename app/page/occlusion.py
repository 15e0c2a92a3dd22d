"""The hand-over-face (occlusion) check of a video, as the pages read and say it.

The worker stores it in `Analysis.evidence["occlusion"]`: `checked`, `frames`, `fps`, `events`
(each `start`, `end`, `peak` in seconds, `covered`: the share of the face covered at the peak,
`score`: 0 when the face behaved like a real one through the event, 1 when like a pasted one),
`score` and `reasons`. Images and analyses made before the check have none: every reader here
answers None for them. Pure: no Flask, no database.
"""

from __future__ import annotations

import math
from typing import Any

from detector.occlusion import PASTED_AT  # where the pages read an event as a pasted face

NO_HAND_TEXT = "No hand passed in front of the face."
NOT_CHECKED_TEXT = "The hand-over-face check did not run on this video."


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def _share(v: Any) -> float | None:
    n = _number(v)
    return None if n is None else min(1.0, max(0.0, n))


def read(evidence: dict[str, Any] | None) -> dict[str, Any] | None:
    """The occlusion evidence, checked and normalised (times >= 0, shares in [0, 1], events in
    time order, malformed events left out), or None when the analysis has none."""
    occ = (evidence or {}).get("occlusion") if isinstance(evidence, dict) else None
    if not isinstance(occ, dict):
        return None
    events = []
    for e in occ.get("events") or []:
        if not isinstance(e, dict):
            continue
        start, end = _number(e.get("start")), _number(e.get("end"))
        if start is None or end is None:
            continue
        start, end = max(0.0, min(start, end)), max(0.0, start, end)
        peak = _number(e.get("peak"))
        peak = (start + end) / 2 if peak is None else min(end, max(start, peak))
        events.append({"start": start, "end": end, "peak": peak, "covered": _share(e.get("covered")),
                       "score": _share(e.get("score"))})
    events.sort(key=lambda e: e["start"])
    frames = _number(occ.get("frames"))
    return {"checked": bool(occ.get("checked")), "frames": int(frames) if frames is not None else None,
            "fps": _number(occ.get("fps")), "events": events, "score": _share(occ.get("score")),
            "reasons": [str(r) for r in occ.get("reasons") or [] if r is not None]}


def pasted(score: float | None) -> bool | None:
    """True: stayed whole over the hand like a pasted face; False: behaved like a real one; None: no score."""
    return None if score is None else score >= PASTED_AT


def seconds_text(t: float) -> str:
    return f"{t:.1f} s"


def event_text(e: dict[str, Any]) -> str:
    """One event in plain words: when, how much of the face the hand covered, how the face behaved."""
    when = f"{e['start']:.1f}–{e['end']:.1f} s"
    covered = f"{round(100 * e['covered'])}% of the face covered" if e["covered"] is not None else \
        "part of the face covered"
    behaved = {False: "the face behaved like a real one", True: "the face stayed whole over the hand like a pasted one",
               None: "how the face behaved was not measured"}[pasted(e["score"])]
    return f"{when}: {covered}; {behaved}."


def overall(occ: dict[str, Any]) -> bool | None:
    """The whole check: its own score, else its worst event; None when nothing was measured."""
    if not occ["checked"] or not occ["events"]:
        return None
    if occ["score"] is not None:
        return pasted(occ["score"])
    scores = [e["score"] for e in occ["events"] if e["score"] is not None]
    return pasted(max(scores)) if scores else None


def headline(occ: dict[str, Any]) -> str:
    """The check's result in one sentence."""
    if not occ["checked"]:
        return NOT_CHECKED_TEXT
    if not occ["events"]:
        return NO_HAND_TEXT
    verdict = overall(occ)
    if verdict is None:
        return "A hand passed in front of the face; how the face behaved was not measured."
    if verdict:
        return "The face stayed whole over the hand like a pasted one when a hand passed in front of it."
    if any(pasted(e["score"]) for e in occ["events"]):
        return "Overall the face behaved like a real one when a hand passed in front of it, but not every time."
    return "The face behaved like a real one each time a hand passed in front of it."


def summary(evidence: dict[str, Any] | None, *, show_score: bool) -> dict[str, Any] | None:
    """What the upload page's status route tells the uploading browser: the events with their
    words (the numeric scores only where the operator shows scores), or None without the check."""
    occ = read(evidence)
    if occ is None:
        return None
    events = []
    for e in occ["events"]:
        out = {k: e[k] for k in ("start", "end", "peak", "covered")}
        out["pasted"] = pasted(e["score"])
        out["text"] = event_text(e)
        if show_score:
            out["score"] = e["score"]
        events.append(out)
    body = {"checked": occ["checked"], "hand_seen": bool(occ["events"]), "pasted": overall(occ),
            "headline": headline(occ), "events": events, "reasons": occ["reasons"]}
    if show_score:
        body["score"] = occ["score"]
    return body
