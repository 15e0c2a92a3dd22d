"""The detector learns from the moderators: how its scores compare with their verdicts, and the
thresholds that would give a chosen precision or a chosen review load (pure functions; the admin
page is app/review/calibration.py, the data comes from `labelled_scores` and `analysed_scores`).

- Reliability: the model's scores, in bins, against the share of those uploads moderators
  confirmed as fake (a calibrated model lies on the diagonal).
- Block threshold for a precision: the lowest score t such that, among decided uploads scored
  >= t, at least that share were confirmed fakes (and at least MIN_SUPPORT of them).
- Review threshold for a load: the score above which that share of all analysed uploads falls
  (those go to a human, or are blocked).

Only confirmed-fake and authentic verdicts count (inconclusive says nothing about the score).
The verdicts are those of items the policy sent to review, so scores under the review threshold
are seldom decided: the diagram says how many verdicts each bin holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.models import Analysis, Decision, Status

BINS = 10
MIN_SUPPORT = 10
"""A threshold is suggested only when at least this many verdicts stand behind it."""
RECENT = 20_000
"""At most this many recent verdicts and analyses are read."""


@dataclass(frozen=True)
class Bin:
    lo: float
    hi: float
    n: int
    mean_score: float | None
    fake_rate: float | None


@dataclass(frozen=True)
class Suggestion:
    threshold: float | None
    """None: not enough verdicts for it."""
    achieved: float | None
    """The precision (or load) that threshold gives on these verdicts (or analyses)."""
    support: int
    """Verdicts (or analyses) at or above the threshold."""


def reliability(scores: np.ndarray, fakes: np.ndarray, bins: int = BINS) -> list[Bin]:
    edges = np.linspace(0.0, 1.0, bins + 1)
    out = []
    for i in range(bins):
        last = i == bins - 1
        sel = (scores >= edges[i]) & ((scores <= edges[i + 1]) if last else (scores < edges[i + 1]))
        n = int(sel.sum())
        out.append(Bin(float(edges[i]), float(edges[i + 1]), n, float(scores[sel].mean()) if n else None,
                       float(fakes[sel].mean()) if n else None))
    return out


def threshold_for_precision(scores: np.ndarray, fakes: np.ndarray, precision: float,
                            min_support: int = MIN_SUPPORT) -> Suggestion:
    """The lowest threshold whose blocked set (score >= t) is at least `precision` fakes."""
    if not 0 < precision <= 1:
        raise ValueError("precision must be in (0, 1]")
    order = np.argsort(-scores, kind="stable")
    s, f = scores[order], fakes[order].astype(float)
    best = Suggestion(None, None, 0)
    hits = np.cumsum(f)
    for k in range(len(s)):
        if k + 1 < len(s) and s[k + 1] == s[k]:
            continue  # a threshold takes every upload with that score
        n = k + 1
        prec = hits[k] / n
        if n >= min_support and prec >= precision:
            best = Suggestion(round(float(s[k]), 4), round(float(prec), 4), n)
    return best


def threshold_for_load(all_scores: np.ndarray, load: float) -> Suggestion:
    """The threshold above which `load` (a share, e.g. 0.05) of all analysed uploads fall."""
    if not 0 < load < 1:
        raise ValueError("load must be in (0, 1)")
    if len(all_scores) == 0:
        return Suggestion(None, None, 0)
    t = float(np.quantile(all_scores, 1 - load, method="higher"))
    above = int((all_scores >= t).sum())
    return Suggestion(round(t, 4), round(above / len(all_scores), 4), above)


def labelled_scores(session: Session) -> tuple[np.ndarray, np.ndarray]:
    """(score, 1 if confirmed fake else 0) of the latest verdict of each decided upload, with the
    score the moderator saw."""
    latest = (select(Decision.upload_id, func.max(Decision.id).label("id")).group_by(Decision.upload_id)
              .subquery())
    rows = session.execute(
        select(Decision.score, Decision.outcome).join(latest, latest.c.id == Decision.id)
        .where(Decision.score.is_not(None), Decision.outcome.in_((Status.CONFIRMED_FAKE, Status.AUTHENTIC)))
        .order_by(Decision.id.desc()).limit(RECENT)).all()
    return (np.array([r[0] for r in rows], dtype=float),
            np.array([r[1] == Status.CONFIRMED_FAKE for r in rows], dtype=bool))


def analysed_scores(session: Session) -> np.ndarray:
    """Scores of recent analyses (every upload, decided or not)."""
    return np.array(session.scalars(select(Analysis.score).where(Analysis.score.is_not(None))
                                    .order_by(Analysis.id.desc()).limit(RECENT)).all(), dtype=float)
