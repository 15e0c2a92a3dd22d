"""Choose an exported model's crop margin on validation people, and refit its calibration there.

The crop margin is a runtime setting (model.json `crop.margin`), not a weight: the classifier can
be judged on a tighter or looser crop than the one it learned from. This tool measures each
candidate margin with the runtime's own code (face detector, crop_face, the ONNX classifier, the
mirror TTA: no torch) on evaluation sets built from the *validation* people
(`python -m training.eval_sets --split val`), prints ROC-AUC per fake set and condition, and
picks the margin with the best mean. With `--write` it then sets the margin in model.json, refits
the temperature and the review/block thresholds (5% / 1% of the validation real photos) at that
margin, as training/export.py does, and records the table under `runtime_tuning`.

    python -m training.tune_runtime --csv /tmp/verity-eval-val/eval.csv --model models/verity-sbi \\
        --margins 1.0,1.05,1.1,1.15,1.2,1.3 [--write --version 2.1.0]

Never point it at the test split's sets: what it picks there would be tuned on the test people.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from detector import evaluation as ev
from training.calibration import fit_temperature, rate_threshold, sigmoid

FAKE_SETS = ("swap-heldout", "swap-poisson-heldout", "sbi-heldout")
REAL_SET = "heldout-real"
CONDITIONS = ("original", "jpeg50")


def item_logits(det, rgb: np.ndarray, margins: tuple[float, ...]) -> dict[float, float] | None:
    """For each margin, the item's logit as the runtime forms it: the largest over the faces of
    the (mirror-averaged) classifier logit. None when no face is found."""
    from detector.crops import crop_face

    faces = det.face_detector.detect(rgb)
    if not faces:
        return None
    cl, spec = det.classifier, det.manifest
    crops = [crop_face(rgb, f.box, f.landmarks, spec.input.size, m, spec.crop.align) for m in margins for f in faces]
    z = cl.combine(cl.raw(cl.inputs(np.stack(crops))), len(crops)).reshape(len(crops), -1)[:, 0]
    z = z.reshape(len(margins), len(faces)).max(axis=1)
    return {m: float(v) for m, v in zip(margins, z)}


def collect(det, csv_path: Path, margins: tuple[float, ...], progress=None) -> list[dict]:
    """Per item and condition: group, label and the logit at each margin."""
    items = [i for i in ev.items_from_csv(csv_path) if i.group in (REAL_SET, *FAKE_SETS)]
    rows = []
    for n, item in enumerate(items):
        rgb0 = np.asarray(Image.open(item.path).convert("RGB"))
        for cond in CONDITIONS:
            z = item_logits(det, ev.apply_condition(rgb0, cond), margins)
            if z is not None:
                rows.append({"group": item.group, "label": item.label, "condition": cond, "logits": z})
        if progress:
            progress(n + 1, len(items))
    return rows


def auc_table(rows: list[dict], margins: tuple[float, ...]) -> dict[float, dict[str, float]]:
    """ROC-AUC of each fake set (of those the rows hold) against the real set, per condition, at
    each margin, and their mean."""
    table: dict[float, dict[str, float]] = {}
    present = [f for f in FAKE_SETS if any(r["group"] == f for r in rows)]
    for m in margins:
        table[m] = {}
        for cond in CONDITIONS:
            for fake in present:
                sel = [r for r in rows if r["condition"] == cond and r["group"] in (REAL_SET, fake)]
                table[m][f"{fake}/{cond}"] = ev.roc_auc([r["label"] for r in sel], [r["logits"][m] for r in sel])
        table[m]["mean"] = float(np.mean(list(table[m].values())))
    return table


def calibrate(rows: list[dict], margin: float) -> dict:
    """Temperature (all fakes against the reals, both conditions) and 5% / 1% FPR thresholds."""
    z = np.array([r["logits"][margin] for r in rows])
    y = np.array([r["label"] for r in rows])
    t = fit_temperature(z, y)
    p = sigmoid(z / t)
    real, fake = p[y == 0], p[y == 1]
    review = rate_threshold(real, 0.05)
    block = max(rate_threshold(real, 0.01), review)
    return {"temperature": t, "review": review, "block": block, "reals": len(real), "fakes": len(fake),
            "fpr_at_review": float(np.mean(real >= review)), "tpr_at_review": float(np.mean(fake >= review)),
            "fpr_at_block": float(np.mean(real >= block)), "tpr_at_block": float(np.mean(fake >= block))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m training.tune_runtime", description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv", type=Path, required=True, help="eval.csv of `training.eval_sets --split val`.")
    ap.add_argument("--model", default="models/verity-sbi", help="Model folder (model.json).")
    ap.add_argument("--margins", default="1.0,1.05,1.1,1.15,1.2,1.25,1.3")
    ap.add_argument("--write", action="store_true", help="Set the chosen margin and the refitted calibration.")
    ap.add_argument("--version", default=None, help="Version to write (required with --write).")
    args = ap.parse_args(argv)
    if args.write and not args.version:
        ap.error("--write needs --version: the same weights at another margin give other scores")
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from detector.pipeline import Detector

    margins = tuple(float(m) for m in args.margins.split(","))
    det = Detector(model=args.model, device="cpu")
    det.warmup()
    with Progress(transient=True) as bar:
        task = bar.add_task("scoring validation photos", total=None)
        rows = collect(det, args.csv, margins, lambda n, total: bar.update(task, completed=n, total=total))
    table = auc_table(rows, margins)
    best = max(margins, key=lambda m: table[m]["mean"])
    cols = list(next(iter(table.values())))
    out = Table(title=f"{det.model_name} {det.model_version}: validation ROC-AUC by crop margin "
                      f"({sum(r['label'] == 0 for r in rows)} real, {sum(r['label'] == 1 for r in rows)} fake items)")
    out.add_column("margin")
    for c in cols:
        out.add_column(c.replace("-heldout", ""), justify="right")
    for m in margins:
        mark = " (chosen)" if m == best else (" (current)" if m == det.manifest.crop.margin else "")
        out.add_row(f"{m}{mark}", *(f"{table[m][c]:.3f}" for c in cols))
    Console(width=160).print(out)
    cal = calibrate(rows, best)
    print(f"at margin {best}: temperature {cal['temperature']:.4f}, review {cal['review']:.4f} "
          f"(FPR {cal['fpr_at_review']:.1%}, TPR {cal['tpr_at_review']:.1%}), block {cal['block']:.4f} "
          f"(FPR {cal['fpr_at_block']:.1%}, TPR {cal['tpr_at_block']:.1%}) on {cal['reals']} real / "
          f"{cal['fakes']} fake validation items")
    if not args.write:
        return
    path = Path(args.model) / "model.json"
    manifest = json.loads(path.read_text())
    manifest["runtime_tuning"] = {
        "previous": {"version": manifest["version"], "margin": manifest["crop"]["margin"],
                     "temperature": manifest["calibration"]["temperature"], "thresholds": manifest["thresholds"]},
        "csv": "training.eval_sets --split val (validation people: real photos, SBI, feathered and Poisson swaps)",
        "auc_by_margin": {str(m): {k: round(v, 4) for k, v in table[m].items()} for m in margins},
        "chosen": best, "calibration": {k: (round(v, 5) if isinstance(v, float) else v) for k, v in cal.items()},
        "command": "python -m training.tune_runtime " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    manifest["version"] = args.version
    manifest["crop"]["margin"] = best
    manifest["calibration"]["temperature"] = round(cal["temperature"], 5)
    manifest["thresholds"] = {"review": round(cal["review"], 5), "block": round(cal["block"], 5)}
    # fitted on the old crop's calibrated scores: refit them (training.video_eval / picture_calibration --write)
    stale = [k for k in ("video", "picture") if manifest.pop(k, None) is not None]
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {path}: version {args.version}, margin {best}")
    if stale:
        print(f"removed its {' and '.join(stale)} calibration, fitted on the old scores: refit "
              + " and ".join({"video": "training.video_eval --write", "picture": "training.picture_calibration --write"}[k]
                             for k in stale))


if __name__ == "__main__":
    main()
