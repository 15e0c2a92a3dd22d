"""Fits a model's picture calibration (model.json `picture`) on its validation people's pictures.

    python -m training.shift_eval --split val --per-source 200 --source faces-fairface \\
        --source faces-london --source faces-canada --out /tmp/verity-pictval     # the pictures
    python -m training.picture_calibration --sets /tmp/verity-pictval --model models/verity-sbi
    python -m training.picture_calibration --sets /tmp/verity-pictval --model models/verity-sbi --write

A picture's score was its highest face's. Two things then bend it, and the source-held-out
evaluation shows both (the model cards' "Known weaknesses"): a picture of four real people has
four chances to cross the review threshold, and a model's real faces do not score alike at every
size (the default's 40-60 px faces reach its review threshold 1% of the time, its faces over
110 px 8%). `size_adjusted` reads each face against the model's real faces of its width, corrects
the most unusual one for the number of faces, and gives the score back on the scale of real
faces over all sizes (detector/aggregate.py `picture_score`).

What it is fitted on: the *validation* people of the sources the models trained on (FairFace,
London, Canada: `split_of(identity, 0) == "val"`, the same people as the splits files' val
identities), in the evaluation's layouts (single photos, four-person groups with 45-110 px faces,
the groups in a 4000 px frame) and conditions (as is, JPEG 50, half size), plus each real single
photo scaled so that its face is 40-224 px wide. Only their *real* faces are fitted; the test
people and the held-out sources are never read. The fakes of the same people then say whether
the adjustment helps: ROC-AUC and the share of real pictures flagged, by layout, with max and
with the adjustment, the adjustment fitted on one half of the people and scored on the other
(two folds), so the comparison is never made on the pictures the fit saw.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from detector import evaluation as ev
from detector.aggregate import _logit

KNOTS = (40.0, 57.0, 80.0, 113.0, 160.0, 226.0, 320.0)
"""Face widths (px) at which the real faces' logit mean and spread are measured (half octaves)."""
BANDWIDTH = math.log(2) / 2
"""Gaussian kernel width in log face width: half an octave."""
MIN_WEIGHT = 25.0
"""A knot with less kernel weight than this (too few real faces near its width) is dropped."""
RESCALED_WIDTHS = (40, 56, 80, 112, 160, 224)
"""Each real single photo is also scored scaled so that its face is this wide."""
LAYOUTS = ("single", "group", "wide")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _fold(unit: str) -> int:
    return hashlib.sha256(unit.encode()).digest()[0] % 2


# --- collecting -------------------------------------------------------------------------------

def validation_items(sets: Path, what: str) -> dict:
    """items.json of shift_eval sets, refused unless they are the validation people's pictures."""
    meta = json.loads((sets / "items.json").read_text())
    if meta.get("split") != "val":
        raise SystemExit(f"{sets} holds the {meta.get('split', 'test')} people's pictures: {what} on "
                         "validation people only (shift_eval --split val)")
    return meta


def collect(sets: Path, model: str, conditions: list[str], meta: dict | None = None) -> dict:
    """Every picture's faces [[width, score], ...] under every condition (training.shift_eval's
    scoring, cached beside the sets in scores-NAME-VERSION.json), and the faces of each real single
    photo scaled to RESCALED_WIDTHS (cached in rescaled-NAME-VERSION.json). `meta`: the sets'
    items.json as `validation_items` gave it, when the caller has read it already."""
    from rich.progress import Progress

    from detector import media
    from detector.pipeline import Detector
    from training import shift_eval

    manifest = json.loads((Path(model) / "model.json").read_text())
    meta = meta if meta is not None else validation_items(sets, "a picture calibration is fitted")
    faces = shift_eval.score(sets, model, conditions)["faces"]
    cache = sets / f"rescaled-{manifest['name']}-{manifest['version']}.json"
    if cache.exists() and (saved := json.loads(cache.read_text())).get("runtime") == shift_eval.runtime_key(manifest):
        return {"faces": faces, "rescaled": saved["rescaled"]}
    det = Detector(model=model, device="cpu")
    det.warmup()
    singles = [r for r in meta["items"] if r["layout"] == "single" and r["family"] == "real"]
    rescaled: list[dict] = []
    with Progress() as bar:
        for r in bar.track(singles, description=f"{det.model_name} {det.model_version}: rescaled singles"):
            rgb, _ = media.load_image(sets / r["path"])
            found = det.analyze_image(rgb).frames[0].faces
            if not found:
                continue
            w = max(f.box[2] - f.box[0] for f in found)
            for target in RESCALED_WIDTHS:
                s = target / w
                if s > 2.0:
                    continue  # never enlarge a photo more than twice: no detail a camera gave
                h, wd = rgb.shape[:2]
                img = np.asarray(Image.fromarray(rgb).resize((max(8, round(wd * s)), max(8, round(h * s))),
                                                             Image.BICUBIC if s > 1 else Image.LANCZOS))
                rescaled.append({"unit": r["unit"], "target": target, "faces": ev.scored_faces(det.analyze_image(img))})
    cache.write_text(json.dumps({"runtime": shift_eval.runtime_key(manifest), "rescaled": rescaled}))
    return {"faces": faces, "rescaled": rescaled}


def real_faces(meta: dict, collected: dict, units: set[str] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(width, logit, native single?) of every real face of the (chosen people's) pictures."""
    w, z, single = [], [], []
    for r in meta["items"]:
        if r["family"] != "real" or (units is not None and r["unit"] not in units):
            continue
        for faces in collected["faces"].get(r["path"], {}).values():
            for width, score in faces:
                w.append(width)
                z.append(_logit(score))
                single.append(r["layout"] == "single")
    for r in collected["rescaled"]:
        if units is not None and r["unit"] not in units:
            continue
        for width, score in r["faces"]:
            w.append(width)
            z.append(_logit(score))
            single.append(False)
    return np.array(w, float), np.array(z, float), np.array(single, bool)


# --- fitting ----------------------------------------------------------------------------------

def fit(widths: np.ndarray, logits: np.ndarray, native: np.ndarray, aggregate: str = "count_adjusted",
        knots=KNOTS) -> dict:
    """The `picture` block. The reference scale: the real faces of the single photos as they are,
    under every condition (the pictures the model's thresholds were chosen for). size_adjusted
    also measures the kernel-weighted mean and standard deviation of all real faces' logits at
    each knot (in log width)."""
    if len(widths) < 50 or native.sum() < 20:
        raise SystemExit(f"too few real faces to fit ({len(widths)}, {int(native.sum())} of single photos)")
    ref = logits[native]
    block = {"aggregate": aggregate, "reference_mean": round(float(ref.mean()), 4),
             "reference_std": round(float(max(ref.std(), 0.05)), 4)}
    if aggregate == "count_adjusted":
        return block
    lw = np.log(np.maximum(widths, 1.0))
    kept, mean, std = [], [], []
    for k in knots:
        wt = np.exp(-0.5 * ((lw - math.log(k)) / BANDWIDTH) ** 2)
        if wt.sum() < MIN_WEIGHT:
            continue
        m = float((wt * logits).sum() / wt.sum())
        sd = float(math.sqrt((wt * (logits - m) ** 2).sum() / wt.sum()))
        kept.append(k)
        mean.append(round(m, 4))
        std.append(round(max(sd, 0.05), 4))
    if not kept:
        raise SystemExit("no face width has enough real faces to fit")
    return {**block, "widths": kept, "mean": mean, "std": std}


def picture_scores(collected: dict, path: str, cond: str, spec) -> float | None:
    from detector.aggregate import picture_score
    from detector.result import FaceEvidence, FrameEvidence

    faces = collected["faces"].get(path, {}).get(cond) or []
    frame = FrameEvidence(0, 0.0, [FaceEvidence([0.0, 0.0, w, w], [], 1.0, s) for w, s in faces])
    return picture_score([frame], spec)


def compare(meta: dict, collected: dict, conditions: list[str], review: float, specs: dict) -> list[dict]:
    """Rows per condition and layout (and all layouts): ROC-AUC and the shares of real and fake
    pictures at or above the review threshold, for each way of reading a picture (`specs`: name
    -> a function of the person giving the PictureSpec fitted without that person)."""
    rows = []
    for cond in conditions:
        per = defaultdict(lambda: ([], defaultdict(list)))
        for r in meta["items"]:
            got = {name: picture_scores(collected, r["path"], cond, spec_for(r["unit"]))
                   for name, spec_for in specs.items()}
            if any(v is None for v in got.values()):
                continue
            for key in (r["layout"], "all"):
                y, s = per[key]
                y.append(r["label"])
                for name, v in got.items():
                    s[name].append(v)
        for key in (*LAYOUTS, "all"):
            y = np.array(per[key][0])
            if len(y) == 0 or y.min() == y.max():
                continue
            row = {"condition": cond, "layout": key, "real": int((y == 0).sum()), "fake": int(y.sum())}
            for name in specs:
                s = np.array(per[key][1][name])
                row[name] = {"auc": ev.roc_auc(y, s), "real_flagged": float((s[y == 0] >= review).mean()),
                             "fake_flagged": float((s[y == 1] >= review).mean())}
            rows.append(row)
    return rows


def table(rows: list[dict], names: list[str]) -> str:
    head = "| condition | layout | real | fake | " + " | ".join(f"ROC-AUC {n}" for n in names) + " | " + \
        " | ".join(f"real / fake flagged, {n}" for n in names) + " |"
    out = [head, "|---|---|---:|---:|" + "---:|" * (2 * len(names))]
    for r in rows:
        out.append(f"| {r['condition']} | {r['layout']} | {r['real']} | {r['fake']} | "
                   + " | ".join(f"{r[n]['auc']:.3f}" for n in names) + " | "
                   + " | ".join(f"{r[n]['real_flagged']:.1%} / {r[n]['fake_flagged']:.1%}" for n in names) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    from detector.manifest import PictureSpec

    p = argparse.ArgumentParser(prog="python -m training.picture_calibration", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", required=True, help="validation pictures (python -m training.shift_eval --split val)")
    p.add_argument("--model", required=True, help="model folder")
    p.add_argument("--conditions", nargs="+", default=list(ev.CONDITIONS), choices=ev.CONDITIONS)
    p.add_argument("--aggregate", choices=("count_adjusted", "size_adjusted"), default="count_adjusted",
                   help="what --write writes (default count_adjusted: reading faces by width did no better on "
                        "the validation people of either shipped model)")
    p.add_argument("--write", action="store_true", help="write the fitted block into the model's model.json")
    p.add_argument("--report", help="also write the comparison (markdown) to this file")
    args = p.parse_args(argv)
    sets, model = Path(args.sets), Path(args.model)
    meta = validation_items(sets, "a picture calibration is fitted")
    collected = collect(sets, str(model), args.conditions, meta)
    manifest = json.loads((model / "model.json").read_text())
    review = manifest["thresholds"]["review"]

    units = sorted({r["unit"] for r in meta["items"]})
    specs = {"max": lambda unit: PictureSpec()}
    for aggregate in ("count_adjusted", "size_adjusted"):
        folds = {k: PictureSpec.model_validate(fit(*real_faces(meta, collected, {u for u in units if _fold(u) != k}),
                                                   aggregate)) for k in (0, 1)}
        specs[aggregate] = lambda unit, folds=folds: folds[_fold(unit)]
    cross = compare(meta, collected, args.conditions, review, specs)
    w, z, native = real_faces(meta, collected)
    block = fit(w, z, native, args.aggregate)
    sized = fit(w, z, native, "size_adjusted")
    people = len({r["unit"] for r in meta["items"] if r["layout"] == "single"})
    block["fitted_on"] = (f"{int(native.sum())} real faces of the single photos of {people} validation people of "
                          f"{', '.join(sorted({r['source'] for r in meta['items']}))}, as is, at JPEG 50 and at "
                          f"half size (training.picture_calibration, {datetime.date.today().isoformat()})")
    text = "\n".join([
        (f"{manifest['name']} {manifest['version']}: picture calibration on validation people "
        f"({args.sets}), review threshold {review}"),
        "",
        f"real faces of the single photos: logit mean {block['reference_mean']:+.2f}, sd {block['reference_std']:.2f}",
        "all real faces by width: " + ", ".join(f"{k:.0f} px: mean {m:+.2f}, sd {s:.2f}" for k, m, s in
                                                zip(sized["widths"], sized["mean"], sized["std"])),
        "",
        "Two folds of people (fitted on one half, scored on the other):",
        "",
        table(cross, list(specs)),
    ])
    print(text)
    print(json.dumps(block, indent=1))
    if args.report:
        Path(args.report).write_text(text + "\n\n```json\n" + json.dumps(block, indent=1) + "\n```\n")
    if args.write:
        PictureSpec.model_validate(block)
        manifest["picture"] = block
        (model / "model.json").write_text(json.dumps(manifest, indent=1) + "\n")
        log(f"wrote the picture calibration into {model / 'model.json'}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
