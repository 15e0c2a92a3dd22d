"""Chooses a model's further crop margins (model.json `tta.margins`) on its validation people's pictures.

    python -m training.shift_eval --split val --per-source 200 --source faces-fairface \\
        --source faces-london --source faces-canada --out /tmp/verity-pictval     # the pictures
    python -m training.crop_margins --sets /tmp/verity-pictval --model models/verity-sbi-research --margins 1.15 1.45
    python -m training.crop_margins --sets /tmp/verity-pictval --model models/verity-sbi-research --write 1.15

Each margin is scored on its own: a copy of the model whose `crop.margin` is that margin (the
network file linked, not copied), scored by `training.shift_eval.score` and cached beside the
sets. Every combination of margins is then read as the runtime reads `tta.margins`: a face's
score is the mean logit of its crops. A picture's faces are count-corrected (model.json
`picture`, count_adjusted), the reference fitted on one half of the people and the pictures of
the other half scored (two folds, as `training.picture_calibration` does), so no combination is
judged on the faces its reference saw. Only validation people are read; the test people and the
held-out sources never are.

`--write` sets `tta.margins` and drops the model's `picture` and `video` blocks: both were fitted
on logits of one crop. Fit them again on the averaged logits:
`training.picture_calibration --write`, then `training.video_eval --write`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
from pathlib import Path

from detector import evaluation as ev
from detector.aggregate import _logit, _sigmoid


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def margin_copy(sets: Path, model: Path, margin: float) -> Path:
    """A copy of `model` that crops every face at `margin` alone (under sets/margins/)."""
    manifest = json.loads((model / "model.json").read_text())
    out = sets / "margins" / f"{manifest['name']}-{manifest['version']}-m{margin:g}"
    manifest["crop"] = {**manifest.get("crop", {}), "margin": margin}
    manifest["tta"] = {**manifest.get("tta", {}), "margins": []}
    manifest["version"] = f"{manifest['version']}+m{margin:g}"
    return linked_copy(model, out, manifest)


def linked_copy(model: Path, out: Path, manifest: dict) -> Path:
    """A model folder `out` that runs `model`'s network (a link to its file, not a copy) with
    `manifest` as its model.json: the same network read another way."""
    out.mkdir(parents=True, exist_ok=True)
    net = out / manifest.get("file", "model.onnx")
    if not net.exists():
        net.symlink_to((Path(model) / manifest.get("file", "model.onnx")).resolve())
    (out / "model.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return out


def averaged(per_margin: list[dict]) -> tuple[dict, int]:
    """{path: {condition: [[width, score], ...]}} of each margin -> the same with each face's
    score the sigmoid of its mean logit over the margins (what the runtime does with
    tta.margins), and how many (picture, condition) pairs were left out because the margins did
    not find the same faces (a crop's margin never changes the detection, so this should be 0)."""
    out: dict[str, dict[str, list]] = {}
    skipped = 0
    for path, by_cond in per_margin[0].items():
        for cond in by_cond:
            lists = [m.get(path, {}).get(cond) for m in per_margin]
            if any(x is None or len(x) != len(lists[0]) for x in lists):
                skipped += 1
                continue
            faces = [[lists[0][i][0], _sigmoid(sum(_logit(x[i][1]) for x in lists) / len(lists))]
                     for i in range(len(lists[0]))]
            out.setdefault(path, {})[cond] = faces
    return out, skipped


def write_margins(model: Path, margins: list[float]) -> dict:
    """Set tta.margins in model.json; drop the picture and video blocks fitted on one crop."""
    from detector.manifest import TestTimeAugmentation, load_manifest

    base = load_manifest(str(model)).crop.margin
    path = model / "model.json"
    manifest = json.loads(path.read_text())
    extra = [m for m in margins if not math.isclose(m, base)]
    manifest["tta"] = TestTimeAugmentation.model_validate({**manifest.get("tta", {}), "margins": extra}).model_dump(exclude_none=True)
    dropped = [k for k in ("picture", "video") if manifest.pop(k, None) is not None]
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    if dropped:
        log(f"dropped {' and '.join(dropped)} from {path}: fitted on one crop's logits; fit again with "
            "training.picture_calibration --write and training.video_eval --write")
    return manifest


def main(argv: list[str] | None = None) -> None:
    from detector.manifest import PictureSpec, load_manifest
    from training import picture_calibration as pc
    from training import shift_eval

    p = argparse.ArgumentParser(prog="python -m training.crop_margins", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", required=True, help="validation pictures (python -m training.shift_eval --split val)")
    p.add_argument("--model", required=True, help="model folder")
    p.add_argument("--margins", nargs="+", type=float, default=[1.15, 1.45],
                   help="margins to try beside the model's crop.margin")
    p.add_argument("--conditions", nargs="+", default=list(ev.CONDITIONS), choices=ev.CONDITIONS)
    p.add_argument("--write", nargs="+", type=float, metavar="MARGIN",
                   help="set tta.margins to these (no scoring) and drop the picture and video blocks")
    args = p.parse_args(argv)
    sets, model = Path(args.sets), Path(args.model)
    if args.write:
        m = write_margins(model, args.write)
        log(f"tta.margins of {model}: {m['tta']['margins']}")
        return
    meta = pc.validation_items(sets, "margins are chosen")
    manifest = load_manifest(str(model))
    review = manifest.thresholds.review
    margins = [manifest.crop.margin, *args.margins]
    scored = {m: shift_eval.score(sets, str(margin_copy(sets, model, m)), args.conditions)["faces"] for m in margins}
    units = sorted({r["unit"] for r in meta["items"]})
    rows = []
    for k in range(1, len(margins) + 1):
        for combo in itertools.combinations(margins, k):
            faces, skipped = averaged([scored[m] for m in combo])
            collected = {"faces": faces, "rescaled": []}
            folds = {f: PictureSpec.model_validate(pc.fit(*pc.real_faces(
                meta, collected, {u for u in units if pc._fold(u) != f}), "count_adjusted")) for f in (0, 1)}
            cross = pc.compare(meta, collected, args.conditions, review, {"c": lambda unit, folds=folds: folds[pc._fold(unit)]})
            rows.append((" + ".join(f"{m:g}" for m in combo), {r["condition"]: r["c"] for r in cross if r["layout"] == "all"},
                         skipped))
    print(f"{manifest.name} {manifest.version}: crop margins on validation people ({sets}), every layout, "
          f"count-corrected, two folds of people; review threshold {review}\n")
    print("| margins | " + " | ".join(f"ROC-AUC {c}" for c in args.conditions) + " | "
          + " | ".join(f"real / fake flagged, {c}" for c in args.conditions) + " |")
    print("|---|" + "---:|" * (2 * len(args.conditions)))
    for name, by_cond, skipped in rows:
        print(f"| {name}{f' ({skipped} left out)' if skipped else ''} | "
              + " | ".join(f"{by_cond[c]['auc']:.3f}" for c in args.conditions) + " | "
              + " | ".join(f"{by_cond[c]['real_flagged']:.1%} / {by_cond[c]['fake_flagged']:.1%}" for c in args.conditions)
              + " |")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
