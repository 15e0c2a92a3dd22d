"""`verity eval`: measure a detector model on labelled media, as-is and after degradations.

Metrics are computed here with numpy only (the worker image has no scikit-learn): ROC-AUC with
ties counted half (the Mann-Whitney statistic), average precision (the step-wise sum that
scikit-learn's `average_precision_score` uses), equal error rate and the true-positive rate at
a 5% false-positive rate.

Items in which no face is found, and unreadable items, are counted and reported on their own
and left out of the metrics: a detector that finds no face has not said "authentic", so such
an item must not be scored as if it had (README.md: a `no_face` item is never reported as authentic).

Conditions re-create what an upload goes through on a platform: `original` (the file as it
is), `jpeg50` (decoded, re-encoded as JPEG quality 50 with Pillow), `half` (downscaled to half
width and height). For videos, degraded conditions apply to each sampled frame.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

CONDITIONS = ("original", "jpeg50", "half")
"""Conditions `verity eval` knows how to apply."""
JPEG_QUALITY = 50
"""Pillow JPEG quality of the `jpeg50` condition (a heavily recompressed social-media upload)."""
FPR_TARGET = 0.05
"""False-positive rate at which the true-positive rate is reported."""
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".m4v", ".webm", ".mkv"}
MEDIA_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES

REAL, FAKE = 0, 1
_LABEL_WORDS = {"0": REAL, "real": REAL, "authentic": REAL, "pristine": REAL, "original": REAL,
                "1": FAKE, "fake": FAKE, "manipulated": FAKE, "deepfake": FAKE, "synthetic": FAKE}


# --- metrics ---------------------------------------------------------------------------------

def _validate(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length ({y.size} vs {s.size})")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    if y.sum() == 0 or y.sum() == y.size:
        raise ValueError("need both real (0) and fake (1) items")
    return y, s


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of x, tied values sharing the mean of the ranks they span."""
    order = np.argsort(x, kind="mergesort")
    _, start, counts = np.unique(x[order], return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat(avg, counts)
    return ranks


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve: P(score of a random fake > score of a random real), ties 1/2."""
    y, s = _validate(labels, scores)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    ranks = _average_ranks(s)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at every distinct score, highest first, starting at (0, 0, +inf).

    An item is called fake when its score is >= the threshold.
    """
    y, s = _validate(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(y)[last_of_run]
    fps = (last_of_run + 1) - tps
    tpr = np.r_[0.0, tps / y.sum()]
    fpr = np.r_[0.0, fps / (y.size - y.sum())]
    return fpr, tpr, np.r_[np.inf, s[last_of_run]]


def average_precision(labels, scores) -> float:
    """Sum over thresholds of (recall step) x precision, without interpolation."""
    y, s = _validate(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(y)[last_of_run]
    precision = tps / (last_of_run + 1)
    recall = tps / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def equal_error_rate(labels, scores) -> float:
    """The rate at which false positives equal misses, linearly interpolated on the ROC curve."""
    fpr, tpr, _ = roc_curve(labels, scores)
    fnr = 1.0 - tpr
    d = fnr - fpr                           # starts at 1 (at +inf), ends <= 0
    i = int(np.argmax(d <= 0))
    if i == 0:
        return float(fpr[0])
    t = d[i - 1] / (d[i - 1] - d[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def tpr_at_fpr(labels, scores, target: float = FPR_TARGET) -> float:
    """Highest true-positive rate at a threshold whose false-positive rate is <= target."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(tpr[fpr <= target + 1e-12].max())


def summarize(labels, scores, threshold: float | None = None) -> dict:
    """Counts and every metric; metrics are None when one class is missing."""
    y = np.asarray(labels, dtype=np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    out: dict = {"n_real": int((y == REAL).sum()), "n_fake": int((y == FAKE).sum())}
    both = out["n_real"] > 0 and out["n_fake"] > 0
    out["auc"] = roc_auc(y, s) if both else None
    out["ap"] = average_precision(y, s) if both else None
    out["eer"] = equal_error_rate(y, s) if both else None
    out["tpr_at_5fpr"] = tpr_at_fpr(y, s) if both else None
    if threshold is not None:
        out["threshold"] = threshold
        out["tpr_at_threshold"] = float((s[y == FAKE] >= threshold).mean()) if out["n_fake"] else None
        out["fpr_at_threshold"] = float((s[y == REAL] >= threshold).mean()) if out["n_real"] else None
    return out


# --- data sets -------------------------------------------------------------------------------

@dataclass(slots=True)
class Item:
    path: Path
    label: int
    """0 real, 1 fake."""
    group: str
    """Where the item comes from (a folder name, or the CSV's group column)."""
    condition: str | None = None
    """Set when the file already is a degraded copy: it is evaluated as-is under this name."""

    @property
    def kind(self) -> str:
        return "video" if self.path.suffix.lower() in VIDEO_SUFFIXES else "image"


def media_files(folder: Path) -> list[Path]:
    """Image and video files under folder, recursively, sorted."""
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a directory")
    return sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in MEDIA_SUFFIXES)


def items_from_folders(real: Iterable[str | Path] = (), fake: Iterable[str | Path] = ()) -> list[Item]:
    """Items from folders; each folder is a set named after it (prefixed real:/fake: on a clash)."""
    folders = [(REAL, Path(f)) for f in real] + [(FAKE, Path(f)) for f in fake]
    names = [f.name for _, f in folders]
    items = []
    for label, folder in folders:
        group = folder.name if names.count(folder.name) == 1 else f"{'real' if label == REAL else 'fake'}:{folder.name}"
        items.extend(Item(p, label, group) for p in media_files(folder))
    return items


def parse_label(raw: str) -> int:
    key = raw.strip().lower()
    if key not in _LABEL_WORDS:
        raise ValueError(f"unknown label {raw!r} (use real/fake or 0/1)")
    return _LABEL_WORDS[key]


def items_from_csv(path: str | Path) -> list[Item]:
    """Rows `path,label[,condition[,group]]`; an optional header row names the columns.

    Relative paths are taken from the CSV's folder. An empty condition means "apply every
    requested condition"; a named one means the file already is that degraded copy.
    """
    path = Path(path)
    base = path.parent
    rows = list(csv.reader(path.read_text().splitlines()))
    cols = ["path", "label", "condition", "group"]
    if rows and rows[0] and rows[0][0].strip().lower() == "path":
        cols = [c.strip().lower() for c in rows[0]]
        rows = rows[1:]
    if "path" not in cols or "label" not in cols:
        raise ValueError(f"{path}: the header must name at least the path and label columns")
    items = []
    for n, row in enumerate(rows, start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        rec = dict(zip(cols, (c.strip() for c in row)))
        try:
            label = parse_label(rec.get("label", ""))
        except ValueError as e:
            raise ValueError(f"{path} row {n}: {e}") from None
        p = Path(rec["path"])
        p = p if p.is_absolute() else base / p
        condition = rec.get("condition") or None
        group = rec.get("group") or ("real" if label == REAL else "fake")
        items.append(Item(p, label, group, condition))
    return items


# --- conditions ------------------------------------------------------------------------------

def jpeg_bytes(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def apply_condition(rgb: np.ndarray, condition: str) -> np.ndarray:
    """The decoded RGB image as the condition would leave it."""
    if condition == "original":
        return rgb
    if condition == "jpeg50":
        with Image.open(io.BytesIO(jpeg_bytes(rgb))) as im:
            return np.asarray(im.convert("RGB"))
    if condition == "half":
        h, w = rgb.shape[:2]
        return np.asarray(Image.fromarray(rgb).resize((max(1, w // 2), max(1, h // 2)), Image.BICUBIC,
                                                      reducing_gap=2.0))
    raise ValueError(f"unknown condition {condition!r} (known: {', '.join(CONDITIONS)})")


# --- running ---------------------------------------------------------------------------------

SCORED, NO_FACE, UNREADABLE = "scored", "no_face", "unreadable"


@dataclass(slots=True)
class Outcome:
    path: str
    label: int
    group: str
    condition: str
    status: str
    """scored, no_face or unreadable."""
    score: float | None
    faces: int = 0
    frames: int = 0
    ms: float = 0.0
    reason: str = ""
    extra: dict = field(default_factory=dict)


def scored_faces(res) -> list[list[float]]:
    """[width, score] of each scored face of a result: how a picture's faces made its score
    (training.picture_calibration)."""
    return [[round(f.box[2] - f.box[0], 1), f.fake_score] for fr in res.frames for f in fr.faces
            if f.fake_score is not None]


def _outcome(item: Item, condition: str, res, ms: float) -> Outcome:
    label = str(res.label)
    status = UNREADABLE if label == "unreadable" else NO_FACE if res.score is None else SCORED
    faces = scored_faces(res)
    return Outcome(str(item.path), item.label, item.group, condition, status, res.score,
                   res.faces_seen, len(res.frames), round(ms, 1), res.reasons[0] if res.reasons else "",
                   {"faces": faces} if faces else {})


def evaluate_item(det, item: Item, condition: str) -> Outcome:
    """Run the detector on one item under one condition (the file as-is when it names its own)."""
    from detector import media
    from detector.aggregate import label_for, video_score
    from detector.result import FrameEvidence

    t0 = time.perf_counter()
    if item.condition is not None or condition == "original":
        res = det.analyze_path(item.path)
        return _outcome(item, item.condition or condition, res, (time.perf_counter() - t0) * 1000)
    try:
        if item.kind == "image":
            rgb, _ = media.load_image(item.path)
            if condition == "jpeg50":
                # Through the production decoder: the bytes a platform would hand us.
                res = det.analyze_bytes(jpeg_bytes(rgb))
            else:
                res = det.analyze_image(apply_condition(rgb, condition))
            return _outcome(item, condition, res, (time.perf_counter() - t0) * 1000)
        frames: list[FrameEvidence] = []
        for fr in media.sample_video(item.path, det.frames):
            r = det.analyze_image(apply_condition(fr.image, condition))
            frames.append(FrameEvidence(index=fr.index, timestamp=fr.timestamp, faces=r.frames[0].faces))
    except media.UnreadableMedia as e:
        return Outcome(str(item.path), item.label, item.group, condition, UNREADABLE, None,
                       ms=round((time.perf_counter() - t0) * 1000, 1), reason=f"{e.reason}: {e.message}")
    score = video_score(frames, det.top_k, det.manifest.video)
    _, reasons = label_for(score, det.manifest.thresholds.review, frames, "video")
    return Outcome(str(item.path), item.label, item.group, condition,
                   NO_FACE if score is None else SCORED, None if score is None else round(score, 4),
                   sum(len(f.faces) for f in frames), len(frames),
                   round((time.perf_counter() - t0) * 1000, 1), reasons[0] if reasons else "")


def plan(items: Sequence[Item], conditions: Sequence[str]) -> list[tuple[Item, str]]:
    """(item, condition) pairs: every requested condition, or the item's own."""
    jobs = []
    for item in items:
        if item.condition is not None:
            jobs.append((item, item.condition))
        else:
            jobs.extend((item, c) for c in conditions)
    return jobs


def run_evaluation(det, items: Sequence[Item], conditions: Sequence[str],
                   on_done: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    outcomes = []
    for item, condition in plan(items, conditions):
        if not item.path.is_file():
            out = Outcome(str(item.path), item.label, item.group, condition, UNREADABLE, None,
                          reason="not_found: no such file")
        else:
            out = evaluate_item(det, item, condition)
        outcomes.append(out)
        if on_done is not None:
            on_done(out)
    return outcomes


# --- report ----------------------------------------------------------------------------------

def _block(outs: list[Outcome], threshold: float) -> dict:
    scored = [o for o in outs if o.status == SCORED]
    d = summarize([o.label for o in scored], [o.score for o in scored], threshold)
    d["n_items"] = len(outs)
    d["no_face"] = sum(o.status == NO_FACE for o in outs)
    d["unreadable"] = sum(o.status == UNREADABLE for o in outs)
    d["mean_score"] = float(np.mean([o.score for o in scored])) if scored else None
    return d


def build_report(outcomes: Sequence[Outcome], threshold: float) -> dict:
    """Per condition: metrics over every item, then per group.

    A fake group is measured against all real items of the condition, a real group against all
    fake items, so that each row answers "how well are these told apart from the other side".
    """
    report: dict = {"threshold": threshold, "conditions": {}}
    conditions = list(dict.fromkeys(o.condition for o in outcomes))
    for c in conditions:
        outs = [o for o in outcomes if o.condition == c]
        groups = {}
        for g in dict.fromkeys(o.group for o in outs):
            own = [o for o in outs if o.group == g]
            labels = {o.label for o in own}
            if len(labels) == 1:
                other = [o for o in outs if o.label != own[0].label]
                block = _block(own + other, threshold)
                for k in ("n_items", "no_face", "unreadable", "mean_score"):
                    block[k] = _block(own, threshold)[k]
            else:
                block = _block(own, threshold)
            block["side"] = {REAL: "real", FAKE: "fake"}[own[0].label] if len(labels) == 1 else "mixed"
            groups[g] = block
        report["conditions"][c] = {"overall": _block(outs, threshold), "groups": groups}
    return report


def _f(v, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


def report_tables(report: dict, title: str):
    """One rich Table per condition."""
    from rich.table import Table

    tables = []
    for c, block in report["conditions"].items():
        t = Table(title=f"{title} · condition {c}", title_justify="left")
        for col in ("set", "side", "items", "no face", "unreadable", "real", "fake", "ROC-AUC", "AP", "EER",
                    "TPR@5%FPR", "flagged@thr", "mean score"):
            t.add_column(col, justify="left" if col in ("set", "side") else "right")
        rows = [("all", "", block["overall"])] + [(g, b["side"], b) for g, b in block["groups"].items()]
        for name, side, b in rows:
            flagged = b["tpr_at_threshold"] if side == "fake" else b["fpr_at_threshold"] if side == "real" else None
            t.add_row(name, side, str(b["n_items"]), str(b["no_face"]), str(b["unreadable"]), str(b["n_real"]),
                      str(b["n_fake"]), _f(b["auc"]), _f(b["ap"]), _f(b["eer"], True), _f(b["tpr_at_5fpr"], True),
                      _f(flagged, True), _f(b["mean_score"]))
        tables.append(t)
    return tables


def per_file_table(outcomes: Sequence[Outcome]):
    from rich.table import Table

    t = Table(title="per file", title_justify="left")
    for col in ("file", "set", "truth", "condition", "status", "score", "faces", "frames", "ms"):
        t.add_column(col, overflow="fold")
    for o in outcomes:
        t.add_row(o.path, o.group, "fake" if o.label == FAKE else "real", o.condition, o.status,
                  "-" if o.score is None else f"{o.score:.3f}", str(o.faces), str(o.frames), f"{o.ms:.0f}")
    return t
