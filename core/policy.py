"""Routing policy: from a detector label and score to an upload status (pure; README.md, "Architecture").

    score <  review            -> cleared
    review <= score < block    -> in_review   (review item "score_in_review_band")
    score >= block             -> blocked     (+ review item "blocked" to confirm, by default)
    declared synthetic         -> at least settings.route_declared_synthetic (default in_review)
    known fake (bank match)    -> blocked     (core.bank; a near miss -> in_review "near_known_fake")
    no_face                    -> settings.route_no_face (default cleared: nothing to judge; the
                                  label stays no_face, the service never calls it "authentic")
    unreadable                 -> settings.route_unreadable (default in_review: fail closed)
    job failed for good        -> in_review   (review item "analysis_failed"; see workers/jobs.py)
    live session suspected     -> in_review   (review item "live_suspected", first in the queue:
                                  the call is still running; see core/live.py)
"""

from __future__ import annotations

from dataclasses import dataclass

from core import defaults
from detector.result import Label

PRIORITY = {"live_suspected": 40, "known_fake": 35, "blocked": 30, "near_known_fake": 28, "analysis_failed": 25, "unreadable": 20,
            "declared_synthetic": 15, "score_in_review_band": 10, "no_face": 5}
"""Review queue order (higher first): blocks waiting for confirmation before grey-band items."""


@dataclass(frozen=True, slots=True)
class Thresholds:
    review: float
    block: float

    def __post_init__(self) -> None:
        if not (0.0 <= self.review <= self.block <= 1.0):
            raise ValueError(f"thresholds must satisfy 0 <= review <= block <= 1, got {self}")


@dataclass(frozen=True, slots=True)
class Routing:
    status: str
    review_reason: str | None
    """Set when a review item must be opened."""

    @property
    def priority(self) -> int:
        return PRIORITY.get(self.review_reason or "", 0)


def route(label: str | Label, score: float | None, thresholds: Thresholds, *,
          no_face: str = "cleared", unreadable: str = "in_review",
          blocked_needs_review: bool = True) -> Routing:
    label = Label(label)
    if label is Label.NO_FACE:
        return Routing(no_face, "no_face" if no_face != "cleared" else None)
    if label is Label.UNREADABLE:
        return Routing(unreadable, "unreadable" if unreadable != "cleared" else None)
    if score is None:
        # A scored label without a score is a detector fault: never clear it.
        return Routing("in_review", "analysis_failed")
    if score >= thresholds.block:
        return Routing("blocked", "blocked" if blocked_needs_review else None)
    if score >= thresholds.review:
        return Routing("in_review", "score_in_review_band")
    return Routing("cleared", None)


SEVERITY = {"cleared": 0, "in_review": 1, "blocked": 2}


def with_provenance(routing: Routing, declared_synthetic: bool, route_declared_synthetic: str) -> Routing:
    """A file that declares itself synthetic goes at least where the operator routes those
    (default in_review); a more severe routing stands. Declarations never lower a routing."""
    if not declared_synthetic or SEVERITY[route_declared_synthetic] <= SEVERITY[routing.status]:
        return routing
    reason = "declared_synthetic" if route_declared_synthetic != "cleared" else None
    return Routing(route_declared_synthetic, reason)


def with_bank(routing: Routing, matches, *, known_fake_needs_review: bool = False) -> Routing:
    """The bank's word over the detector's: a match (the same picture as a confirmed fake) blocks,
    whatever the score; a near miss sends what would be cleared to a human. `matches` is
    core.bank.Match-like (`near`)."""
    if any(not m.near for m in matches):
        return Routing("blocked", "known_fake" if known_fake_needs_review else None)
    if matches and routing.status != "blocked":
        return Routing("in_review", "near_known_fake")
    return routing


def review_priority(routing: Routing, *, anonymous: bool) -> int:
    """The review item's priority: the reason's, far below every platform item's for an anonymous
    page upload (a flood of those must never bury what platforms sent)."""
    return routing.priority - (defaults.ANONYMOUS_PRIORITY_PENALTY if anonymous else 0)


def failed_routing() -> Routing:
    return Routing("in_review", "analysis_failed")
