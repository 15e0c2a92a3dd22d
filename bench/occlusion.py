"""Evaluate the occlusion check on the corpus of bench/occlusion_corpus.py.

Runs the detector on every video of corpus.csv and prints, as Markdown:

  (a) the check alone on clips with a hand across the face: real-across against fake-*-across,
      the check's score (0 = behaved like a real face, 1 = like a pasted one; None, no event
      found, counts as 0.5);
  (b) the whole item score with the check (`score`) against without it (`classifier_score`),
      on all clips, and the paired difference;
  (c) the same per fake family (paste / flicker / lowres across, paste without occluder);
  (d) how often an event is found on across / beside / no-occluder clips, real and fake (on
      beside and none, an event is a false one).

ROC-AUC is the Mann-Whitney statistic (ties count half). 95% CIs: percentile bootstrap, 1000
resamples, stratified by label; by default the resampling unit is the source clip (every video
made from one talking-face clip goes in or out together: they share the person and the codec),
and "with vs without" resamples both with the same draw (paired).

    python bench/occlusion.py [--corpus /tmp/verity-occlusion/corpus.csv] [--json OUT]
                              [--resume] [--limit N] [--device cpu] [--threads 1]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FAMILIES = [("paste", "across"), ("flicker", "across"), ("lowres", "across"), ("paste", "none")]


# --- statistics ------------------------------------------------------------------------------

def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x), float)
    i = 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def auc(pos, neg) -> float:
    """P(score of a positive > score of a negative) + 0.5 P(tie): the Mann-Whitney ROC-AUC."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if not len(pos) or not len(neg):
        return float("nan")
    r = _ranks(np.concatenate([pos, neg]))
    u = r[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def bootstrap(rows: list[dict], scorers: dict, n: int = 1000, seed: int = 0, unit: str = "clip") -> dict:
    """AUC of each scorer (name -> function(row) -> float) on rows (label "fake" positive), with
    percentile 95% CIs from one shared set of resamples (paired), stratified by label and drawn
    by `unit` ("clip": the source clip, all its videos together; "video"). Also the difference
    of the first two scorers. Returns {name: (auc, lo, hi)} (+ "diff")."""
    rng = np.random.default_rng(seed)
    scores = {k: np.array([f(r) for r in rows], float) for k, f in scorers.items()}
    y = np.array([r["label"] == "fake" for r in rows])
    key = [(r["source_folder"], r["source_clip"]) if unit == "clip" else i for i, r in enumerate(rows)]
    groups: dict[tuple, dict] = {}
    for i, (k, lab) in enumerate(zip(key, y)):
        groups.setdefault(bool(lab), {}).setdefault(k, []).append(i)
    strata = [[np.array(v) for v in groups.get(lab, {}).values()] for lab in (True, False)]

    def point(idx_pos, idx_neg):
        return {k: auc(s[idx_pos], s[idx_neg]) for k, s in scores.items()}

    full = point(np.flatnonzero(y), np.flatnonzero(~y))
    names = list(scorers)
    draws = {k: [] for k in names}
    diffs = []
    if all(strata):
        for _ in range(n):
            picked = []
            for st in strata:
                sel = rng.integers(len(st), size=len(st))
                picked.append(np.concatenate([st[j] for j in sel]))
            p = point(*picked)
            for k in names:
                draws[k].append(p[k])
            if len(names) >= 2:
                diffs.append(p[names[0]] - p[names[1]])

    def ci(v):
        v = np.asarray(v, float)
        v = v[~np.isnan(v)]
        return (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) if len(v) else (math.nan, math.nan)

    out = {k: (full[k], *ci(draws[k])) for k in names}
    if len(names) >= 2:
        out["diff"] = (full[names[0]] - full[names[1]], *ci(diffs))
    return out


# --- running the detector ---------------------------------------------------------------------

def result_record(r) -> dict:
    """What we keep of a DetectionResult."""
    return {"score": r.score, "classifier_score": r.classifier_score, "label_out": str(r.label),
            "occlusion": r.occlusion, "reasons": list(r.reasons)}


def occ_score(row) -> float:
    o = row.get("occlusion") or {}
    s = o.get("score")
    return 0.5 if s is None else float(s)


def whole(key):
    def f(row):
        s = row.get(key)
        return 0.5 if s is None else float(s)
    return f


def events(row) -> int:
    o = row.get("occlusion") or {}
    return len(o.get("events") or [])


def run(rows: list[dict], corpus_dir: Path, results: Path, resume: bool, args) -> list[dict]:
    done: dict[str, dict] = {}
    if resume and results.is_file():
        for line in results.read_text().splitlines():
            if line.strip():
                d = json.loads(line)
                done[d["path"]] = d
    todo = [r for r in rows if r["path"] not in done]
    if todo:
        from detector.pipeline import Detector
        kw = {"device": args.device}
        if args.threads:
            kw["threads"] = args.threads
        if args.frames:
            kw["frames"] = args.frames
        det = Detector(**kw)
        try:
            from tqdm import tqdm
            it = tqdm(todo, desc="videos", unit="video")
        except ImportError:
            it = todo
        mode = "a" if resume else "w"
        with open(results, mode) as fh:
            for k, r in enumerate(it):
                t = time.perf_counter()
                rec = result_record(det.analyze_path(corpus_dir / r["path"]))
                rec["path"], rec["seconds"] = r["path"], round(time.perf_counter() - t, 3)
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                done[r["path"]] = rec
                if it is todo and (k + 1) % 10 == 0:
                    print(f"  {k + 1}/{len(todo)}", file=sys.stderr, flush=True)
    return [{**r, **{k: v for k, v in done[r["path"]].items() if k != "path"}} for r in rows]


# --- the report ------------------------------------------------------------------------------

def fmt(t) -> str:
    a, lo, hi = t
    if math.isnan(a):
        return "n/a"
    return f"{a:.3f} [{lo:.3f}, {hi:.3f}]" if not math.isnan(lo) else f"{a:.3f}"


def report(rows: list[dict], n_boot: int, unit: str) -> tuple[str, dict]:
    out: dict = {"n": len(rows), "bootstrap": {"resamples": n_boot, "unit": unit}}
    lines = []
    reals = [r for r in rows if r["label"] == "real"]
    real_across = [r for r in reals if r["occluder"] == "across"]
    fake_across = [r for r in rows if r["label"] == "fake" and r["occluder"] == "across"]

    a = bootstrap(real_across + fake_across, {"check": occ_score}, n_boot, 0, unit)
    out["a_check_alone_across"] = {"auc": a["check"], "n_real": len(real_across), "n_fake": len(fake_across)}
    lines += ["### (a) The occlusion check alone, hand across the face", "",
              "| real-across | fake-*-across | ROC-AUC [95% CI] | no event (real / fake) |", "|---|---|---|---|",
              (f"| {len(real_across)} | {len(fake_across)} | {fmt(a['check'])} | "
              f"{sum(events(r) == 0 for r in real_across)} / {sum(events(r) == 0 for r in fake_across)} |"), ""]

    b = bootstrap(rows, {"with": whole("score"), "without": whole("classifier_score")}, n_boot, 1, unit)
    out["b_whole_score_all"] = {"with_check": b["with"], "without_check": b["without"], "diff": b["diff"]}
    none_scores = sum(r.get("score") is None for r in rows)
    lines += ["### (b) Whole item score, with and without the check (all clips)", "",
              "| videos | with check | without check | with - without (paired) | no score |",
              "|---|---|---|---|---|",
              (f"| {len(rows)} ({len(reals)} real) | {fmt(b['with'])} | {fmt(b['without'])} | "
              f"{fmt(b['diff'])} | {none_scores} |"), ""]

    lines += ["### (c) Per fake family", "",
              ("| family | occluder | fakes | check alone vs real-across | with check vs all reals | "
              "without check vs all reals | with - without |"), "|---|---|---|---|---|---|---|"]
    out["c_families"] = {}
    for fam, occl in FAMILIES:
        fakes = [r for r in rows if r["label"] == "fake" and r["family"] == fam and r["occluder"] == occl]
        if not fakes:
            continue
        chk = bootstrap(real_across + fakes, {"check": occ_score}, n_boot, 2, unit)["check"] \
            if occl == "across" else (math.nan, math.nan, math.nan)
        w = bootstrap(reals + fakes, {"with": whole("score"), "without": whole("classifier_score")}, n_boot, 3, unit)
        out["c_families"][f"{fam}-{occl}"] = {"n": len(fakes), "check_alone": chk, "with": w["with"],
                                              "without": w["without"], "diff": w["diff"]}
        lines.append(f"| {fam} | {occl} | {len(fakes)} | {fmt(chk)} | {fmt(w['with'])} | "
                     f"{fmt(w['without'])} | {fmt(w['diff'])} |")
    lines.append("")

    lines += ["### (d) Events found", "",
              "| occluder | label | videos | checked | >= 1 event | mean check score (None = 0.5) |",
              "|---|---|---|---|---|---|"]
    out["d_events"] = {}
    for occl in ("across", "beside", "none"):
        for lab in ("real", "fake"):
            grp = [r for r in rows if r["occluder"] == occl and r["label"] == lab]
            if not grp:
                continue
            checked = sum(bool((r.get("occlusion") or {}).get("checked")) for r in grp)
            found = sum(events(r) > 0 for r in grp)
            mean = float(np.mean([occ_score(r) for r in grp]))
            out["d_events"][f"{occl}-{lab}"] = {"n": len(grp), "checked": checked, "found": found,
                                                "rate": found / len(grp), "mean_score": mean}
            lines.append(f"| {occl} | {lab} | {len(grp)} | {checked} | {found} ({found / len(grp):.0%}) | "
                         f"{mean:.3f} |")
    lines.append("")
    false_ev = [r for r in rows if r["occluder"] in ("beside", "none")]
    if false_ev:
        fe = sum(events(r) > 0 for r in false_ev)
        lines.append(f"False event rate (beside + none, real and fake): {fe}/{len(false_ev)} = {fe / len(false_ev):.1%}")
        out["false_event_rate"] = fe / len(false_ev)
    return "\n".join(lines), out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=Path("/tmp/verity-occlusion/corpus.csv"))
    ap.add_argument("--results", type=Path, default=None,
                    help="JSONL of per-video results (default: results.jsonl beside the corpus)")
    ap.add_argument("--resume", action="store_true", help="reuse the results already in --results")
    ap.add_argument("--json", type=Path, default=None, help="write the metrics and per-video rows here")
    ap.add_argument("--limit", type=int, default=None, help="only the first N videos (smoke runs)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--frames", type=int, default=None, help="frames sampled per video (Detector default)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--unit", choices=("clip", "video"), default="clip", help="bootstrap resampling unit")
    args = ap.parse_args(argv)

    if not args.corpus.is_file():
        sys.exit(f"no corpus at {args.corpus}: run bench/occlusion_corpus.py first")
    with open(args.corpus, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if args.limit:
        rows = rows[: args.limit]
    results = args.results or args.corpus.with_name("results.jsonl")
    t0 = time.time()
    rows = run(rows, args.corpus.parent, results, args.resume, args)
    table, metrics = report(rows, args.bootstrap, args.unit)
    print(f"\n## Occlusion check on {args.corpus} ({len(rows)} videos, {time.time() - t0:.0f} s)\n")
    print(table)
    if args.json:
        metrics["rows"] = rows
        args.json.write_text(json.dumps(metrics, indent=1, default=str))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
