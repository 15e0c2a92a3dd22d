"""Train the Self-Blended-Images face-forgery classifier.

    python -m training.train --real DIR [--real DIR ...] --out models/NAME \
        --backbone effnet-lite0 --size 224 --epochs 20 --batch 32 --seed 0 [--resume]

Real faces come from --real (see training/data.py for the identity rule); every training
sample is a pair (real crop, its Self-Blended fake) made on the fly (training/sbi.py).
Identity-disjoint splits: train / val (model selection, calibration) / test (never touched;
its identities are written to --splits so the evaluation can use exactly those people).
Checkpoints go to training/runs/NAME/ (--runs; last.pt every epoch, best.pt = best validation
AUC); --resume continues from last.pt. The network trains on a GPU when torch sees one
(--device auto|cpu|cuda); the fakes are always made on the CPU by --workers processes. At the end the best checkpoint is exported to --out with
training/export.py (ONNX + model.json + MODEL_CARD.md) unless --no-export.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from training import data as D
from training import sbi
from training.nets import BACKBONES, build_model, freeze_bn, load_fused_onnx, predict, to_tensor
from training.validation import auc, selection_sets, validation_swaps
from training.views import Donors, make_view

RUNS = Path(__file__).resolve().parent / "runs"


# --- training-only parts: X-ray head, weight average, device --------------------------------

class XrayHead(nn.Module):
    """Auxiliary Face X-ray head (Li et al., CVPR 2020) for training only: a small convolution
    on the stride-16 feature map predicts where the blending boundary is (sbi.boundary). It hangs on
    a forward hook, so the backbone, its checkpoint and the exported ONNX stay the classifier
    alone; the boundary map is extra supervision per pixel, where one label per image is little
    for a corpus of a few hundred people."""

    def __init__(self, model: nn.Module, backbone: str) -> None:
        super().__init__()
        stage = model.blocks[4] if backbone == "effnet-lite0" else model.features[13]
        self.feat = None
        self._hook = stage.register_forward_hook(lambda _m, _i, out: setattr(self, "feat", out))
        with torch.no_grad():
            was = model.training
            model.eval()
            model(torch.zeros(1, 3, 64, 64, device=next(model.parameters()).device))
            model.train(was)
        ch = self.feat.shape[1]
        self.net = nn.Sequential(nn.Conv2d(ch, 64, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(64, 1, 1))

    def forward(self, grid: int) -> torch.Tensor:
        out = self.net(self.feat)
        if out.shape[-1] != grid:
            out = nn.functional.interpolate(out, size=(grid, grid), mode="bilinear", align_corners=False)
        return out[:, 0]


class EMA:
    """Exponential moving average of a model's weights and BatchNorm statistics (the decay
    ramps up over the first steps, as in timm's ModelEmaV2 / TF's num_updates trick)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        import copy

        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        mine = [v for v in self.model.state_dict().values() if v.dtype.is_floating_point]
        theirs = [v for v in model.state_dict().values() if v.dtype.is_floating_point]
        torch._foreach_mul_(mine, d)
        torch._foreach_add_(mine, theirs, alpha=1 - d)


def pick_device(name: str) -> torch.device:
    """`--device`: auto takes CUDA when torch sees it; cuda demanded and absent is an error, so a
    GPU run never silently trains on the CPU for days."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device cuda: torch {torch.__version__} sees no CUDA device (built for CUDA "
                         f"{torch.version.cuda or 'none: a CPU-only wheel'}); install a CUDA build of torch "
                         f"or train with --device cpu")
    return torch.device(name)


# --- samples --------------------------------------------------------------------------------

class SBIPairs(Dataset):
    """Item i: (real crop, fake crop) of training face i, seeded by (seed, epoch, cycle, i). The
    fake is a Self-Blended Image, or with probability p_bi a cross-identity blend. `cycle` counts
    the passes over the faces within one epoch (an epoch of more steps than faces makes several):
    every pass draws new fakes and new degradations, never the same pair twice."""

    def __init__(self, records, size, margin, align, seed, epoch, p_bi: float = 0.0,
                 p_video: float = 0.0, donors: Donors | None = None, xray_grid: int = 0,
                 p_occlude: float = 0.0, p_lowres: float = 0.0, p_small: float = 0.0,
                 p_seamless: float = 0.0, p_frame: float = 0.0, p_clean: float = 0.0):
        self.records, self.size, self.margin, self.align = records, size, margin, align
        self.seed, self.epoch, self.cycle = seed, epoch, 0
        self.p_bi, self.p_video, self.xray_grid, self.p_occlude = p_bi, p_video, xray_grid, p_occlude
        self.donors = donors if donors is not None or p_bi <= 0 else Donors(records)
        self.p_lowres = p_lowres
        self.p_small = p_small
        self.p_seamless = p_seamless
        self.p_frame = p_frame
        self.p_clean = p_clean

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i):
        rng = np.random.default_rng([self.seed, self.epoch, self.cycle, i])
        rec = self.records[i]
        bi = self.p_bi > 0 and rng.random() < self.p_bi
        # a careful tool's swap: short-circuited at 0, so that older recipes draw exactly as before
        clean = bi and self.p_clean > 0 and rng.random() < self.p_clean
        donor = self.donors.pick(i, rng, same_source=clean) if bi else None
        view = donor_view = None
        if self.p_frame > 0 and rng.random() < self.p_frame:  # one video still for both views
            *view, codec = sbi.video_still(*rec.native_view(), rng)
            if donor is not None:  # a swap between two videos' frames: the donor's through the same codec
                donor_view = sbi.video_still(*donor.native_view(), rng, codec=codec)[:3]
        occ = None
        if self.p_occlude > 0 and rng.random() < self.p_occlude:  # one occluder for both views
            img, _, lms = view if view is not None else rec.native_view()
            texture = self.records[int(rng.integers(0, len(self.records)))].image
            occ = sbi.draw_occluder(img.shape[:2], lms, texture, rng)
        small = self.p_small > 0 and rng.random() < self.p_small  # both views of the pair alike
        real = make_view(rec, rng, False, self.size, self.margin, self.align, True, p_video=self.p_video,
                         xray_grid=self.xray_grid, occluder=occ, small=small, view=view)
        lowres = self.p_lowres > 0 and rng.random() < self.p_lowres
        seamless = self.p_seamless > 0 and rng.random() < self.p_seamless
        fake = make_view(rec, rng, True, self.size, self.margin, self.align, True, donor=donor,
                         p_video=self.p_video, xray_grid=self.xray_grid, occluder=occ, lowres=lowres,
                         small=small, seamless=seamless, view=view, donor_view=donor_view, clean=clean)
        if self.xray_grid:
            return np.stack([real[0], fake[0]]), np.stack([real[1], fake[1]])
        return np.stack([real, fake])


def collate(items):
    """Batch of pairs -> (images, labels), or (images, labels, X-ray maps) for X-ray items."""
    maps = None
    if isinstance(items[0], tuple):
        items, maps = [i[0] for i in items], np.concatenate([i[1] for i in items], 0)
    x = np.concatenate(items, 0)
    y = np.tile(np.array([0.0, 1.0], dtype=np.float32), len(items))
    if maps is None:
        return to_tensor(x), torch.from_numpy(y)
    return to_tensor(x), torch.from_numpy(y), torch.from_numpy(maps)


# --- main -----------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _basic_options(p)
    _data_options(p)
    _recipe_options(p)
    _run_options(p)
    return p.parse_args(argv)


def _basic_options(p: argparse.ArgumentParser) -> None:
    """What to train on and where to, the network, its input and the schedule."""
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


def _data_options(p: argparse.ArgumentParser) -> None:
    """The corpus: identities, frames, faces, exclusions, the crop cache and the splits."""
    p.add_argument("--id-rule", default="auto", choices=("auto", "subdir", "file"))
    p.add_argument("--video-frames", type=int, default=16, help="frames sampled per video")
    p.add_argument("--faces-per-image", type=int, default=1,
                   help="train on up to this many faces of each image or frame, largest first (validation "
                        "keeps the largest only)")
    p.add_argument("--exclude", action="append", default=None,
                   help="glob on '<--real folder name>/<relative path>' of files never to use (repeatable; "
                        f"default: {', '.join(D.DEFAULT_EXCLUDE)})")
    p.add_argument("--cache-size", type=int, default=D.CACHE_SIZE,
                   help="side of the cached face crops (2.0 x the face box); raise it with --size "
                        "above about 0.6 x of it, or the classifier sees upsampled faces")
    p.add_argument("--cache", default=str(D.CACHE_DIR),
                   help="folder of the face-crop cache (one .npz per source file; default training/cache)")
    p.add_argument("--runs", default=str(RUNS), help="folder of the runs (checkpoints under RUNS/NAME)")
    p.add_argument("--splits", default="training/splits/verity-sbi.json",
                   help="identity splits file: reused when it exists, written otherwise")
    p.add_argument("--val-frac", type=float, default=0.15)
    p.add_argument("--test-frac", type=float, default=0.15)


def _recipe_options(p: argparse.ArgumentParser) -> None:
    """The training recipe: time budget, fakes, augmentation, regularisation, extra losses."""
    p.add_argument("--time-budget", type=float, default=0.0,
                   help="minutes of training (not counting validation): the cosine schedule follows "
                        "max(step fraction, time fraction) and the run ends when it is used up; 0: off")
    p.add_argument("--p-bi", type=float, default=0.0,
                   help="fraction of the fakes that are cross-identity blends (Face X-ray style) instead of SBI")
    p.add_argument("--p-video", type=float, default=0.0,
                   help="probability that a training image goes through H.264 like a video frame")
    p.add_argument("--ema", type=float, default=0.0,
                   help="decay of an exponential moving average of the weights (e.g. 0.999); "
                        "validated, kept and exported instead of the raw weights; 0: off")
    p.add_argument("--drop-rate", type=float, default=0.0, help="dropout before the head")
    p.add_argument("--p-occlude", type=float, default=0.0,
                   help="probability that a pair gets one occluder (scarf or hat edge, hand, bar; sbi.OCCLUDERS), "
                        "the same on the real and the fake view")
    p.add_argument("--p-lowres", type=float, default=0.0,
                   help="probability that a fake's blended-in face is first re-rendered at a lower resolution "
                        "than the picture and smoothed (sbi.rerender: what reenactment and live face-swap tools "
                        "paste); the real view is never touched")
    p.add_argument("--p-seamless", type=float, default=0.0,
                   help="probability that a fake's blended-in face is pasted in the gradient domain "
                        "(sbi.gradient_blend, OpenCV's seamlessClone: no colour seam, as a tool's seamless "
                        "paste) before the alpha blend")
    p.add_argument("--p-frame", type=float, default=0.0,
                   help="probability that a pair (its real and its fake view alike) starts from a still of a "
                        "video: the picture shrunk until the face is 64-200 px wide and put through H.264, "
                        "MPEG-4, MPEG-2 or MPEG-1 (sbi.video_still) before anything is pasted into it, as a "
                        "face-swap tool works on decoded frames")
    p.add_argument("--p-clean-swap", dest="p_clean", type=float, default=0.0,
                   help="share of the cross-identity blends (--p-bi) made as a careful tool makes a swap: the "
                        "donor from the same source folder (one camera, light and encoder), unaltered (no colour "
                        "jitter, blur or sharpening), replacing the face fully, its colour mean and spread "
                        "matched in full; nothing but the other person's face tells it apart")
    p.add_argument("--p-small", type=float, default=0.0,
                   help="probability that a pair (its real and its fake view alike) is shrunk until the face is "
                        "24-48 px wide, a face of a group photo (the runtime judges faces from 24 px)")
    p.add_argument("--xray", type=float, default=0.0,
                   help="weight of an auxiliary Face X-ray loss (blending-boundary map predicted from the "
                        "stride-16 features; training only, not exported); 0: off")
    p.add_argument("--val-swaps", action="store_true",
                   help="also print the AUC on evaluation-recipe swaps of validation people (monitoring only)")


def _run_options(p: argparse.ArgumentParser) -> None:
    """Device and processes, resuming, starting weights, the export at the end."""
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where the network trains (auto: CUDA when torch sees a GPU); the fakes are "
                        "always made on the CPU, by --workers processes")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--workers", type=int, default=1, help="DataLoader worker processes")
    p.add_argument("--resume", action="store_true", help="continue from training/runs/NAME/last.pt")
    p.add_argument("--init", default=None,
                   help="start from the weights of this checkpoint (e.g. training/runs/OTHER/best.pt) instead of "
                        "ImageNet, with a fresh optimiser and schedule: fine-tune at another --size, say")
    p.add_argument("--init-onnx", default=None,
                   help="start from an exported model.onnx of the same backbone (its checkpoint gone): "
                        "folded BatchNorms, kept frozen (per-channel affine) while training")
    p.add_argument("--no-export", dest="export", action="store_false")
    p.add_argument("--version", default=None, help="model version written to model.json")


def _save(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def setup_torch(args) -> torch.device:
    """Threads, seed and the device (--device) the network trains on."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # fixed input size: pick the fastest kernels once
    return device


def run_config(args, argv) -> tuple[Path, dict]:
    """The run's folder (made here) and its config: the options and the command line. With --resume,
    the options that decide the crops and the network must be those the run started with, and the
    command stays the one that started it."""
    name = args.name or Path(args.out).name
    run = Path(args.runs) / name
    run.mkdir(parents=True, exist_ok=True)
    cfg = {k: v for k, v in vars(args).items() if k not in ("resume", "export")}
    cfg["command"] = "python -m training.train " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.resume and (run / "config.json").exists():
        old = json.loads((run / "config.json").read_text())
        old.setdefault("cache_size", D.CACHE_SIZE)  # runs from before --cache-size used the default
        for k in ("backbone", "size", "margin", "align", "seed", "cache_size"):
            if old.get(k) != cfg.get(k):
                raise SystemExit(f"--resume: {k} differs from the run's config ({old.get(k)} != {cfg.get(k)})")
        cfg["command"] = old.get("command", cfg["command"])
    return run, cfg


def load_data(args, cfg: dict):
    """The training faces, the validation sets that pick the checkpoint, and with --val-swaps the
    monitoring set: (train records, sets, monitor sets)."""
    parts, _ = D.load_split_records(cfg)
    train, val = parts["train"], parts["val"]
    print(f"train faces {len(train)} ({len({r.identity for r in train})} ids), "
          f"val faces {len(val)} ({len({r.identity for r in val})} ids), "
          f"test faces {len(parts['test'])} ({len({r.identity for r in parts['test']})} ids, untouched)")
    vsets = selection_sets(val, cfg)
    monitor = {"swap": validation_swaps(val, args.size, args.margin, args.align)} if args.val_swaps else {}
    return train, vsets, monitor


def init_model(args, cfg: dict) -> nn.Module:
    """The network with its starting weights: ImageNet, an earlier checkpoint (--init) or an
    exported model (--init-onnx). Sets cfg["freeze_bn"] for weights that descend from a folded
    ONNX model."""
    model = build_model(args.backbone, pretrained=args.init is None and args.init_onnx is None,
                        drop_rate=args.drop_rate)
    if args.init and args.init_onnx:
        raise SystemExit("--init and --init-onnx: one or the other")
    if args.init_onnx:
        load_fused_onnx(model, args.init_onnx, args.size)
        cfg["freeze_bn"] = True
    if args.init:
        init = torch.load(args.init, map_location="cpu", weights_only=False)
        if init.get("config", {}).get("backbone", args.backbone) != args.backbone:
            raise SystemExit(f"--init {args.init}: a {init['config']['backbone']} checkpoint, not {args.backbone}")
        model.load_state_dict(init["model"])
        # weights that descend from a folded ONNX model keep their BatchNorms frozen
        icfg = init.get("config", {})
        cfg["freeze_bn"] = bool(icfg.get("freeze_bn") or icfg.get("init_onnx"))
        print(f"initialised from {args.init} (epoch {init.get('epoch')}, size {init.get('config', {}).get('size')})")
    return model


@dataclass(frozen=True)
class Schedule:
    """Learning rate factor: linear warm-up over `warm` steps, then a cosine from 1 down to 0.01 over
    the run's progress, which is the fraction of the `total` steps done or, with a time budget
    (seconds, 0: none), of the budget used, whichever is further: a run on a slow or shared machine
    still anneals and ends."""

    total: int
    warm: int
    budget: float = 0.0

    def progress(self, step: int, elapsed: float) -> float:
        p = step / self.total
        if self.budget > 0:
            p = max(p, elapsed / self.budget)
        return min(1.0, p)

    def lr_factor(self, step: int, elapsed: float) -> float:
        if step < self.warm:
            return (step + 1) / self.warm
        p = self.progress(step, elapsed)
        p0 = self.warm / self.total
        q = min(1.0, max(0.0, (p - p0) / max(1e-9, 1 - p0)))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * q))


@dataclass
class TrainState:
    """What the epoch loop works on and carries from epoch to epoch (last.pt keeps it)."""

    model: nn.Module
    opt: torch.optim.Optimizer
    schedule: Schedule
    steps: int                      # per epoch
    ema: EMA | None = None
    aux: XrayHead | None = None
    grid: int = 0                   # side of the X-ray target map (0: no X-ray loss)
    donors: Donors | None = None
    start: int = 0                  # first epoch to run
    best: float = -1.0              # best mean validation AUC so far
    history: list = field(default_factory=list)
    step: int = 0
    elapsed: float = 0.0            # seconds of training steps, validation not counted


def training_state(args, model: nn.Module, train, device: torch.device) -> TrainState:
    """Weight average, blend donors, X-ray head, AdamW and the schedule for `model`."""
    ema = EMA(model, args.ema) if args.ema > 0 else None
    donors = Donors(train) if args.p_bi > 0 else None
    aux = XrayHead(model, args.backbone).to(device) if args.xray > 0 else None
    grid = -(-args.size // 16) if aux is not None else 0
    params = list(model.parameters()) + (list(aux.parameters()) if aux is not None else [])
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    steps = args.steps_per_epoch or math.ceil(len(train) / (args.batch // 2))
    total = steps * args.epochs
    schedule = Schedule(total, min(steps, max(1, total // 20)), args.time_budget * 60.0)
    return TrainState(model, opt, schedule, steps, ema=ema, aux=aux, grid=grid, donors=donors)


def resume(st: TrainState, run: Path) -> None:
    """Continue from run/last.pt: weights, optimiser, average, X-ray head, position and history."""
    ck = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    st.model.load_state_dict(ck["model"])
    st.opt.load_state_dict(ck["opt"])
    if st.ema is not None and "ema" in ck:
        st.ema.model.load_state_dict(ck["ema"])
    if st.aux is not None and "aux" in ck:
        st.aux.net.load_state_dict(ck["aux"])
    st.start, st.best, st.history = ck["epoch"] + 1, ck["best"], ck["history"]
    st.step, st.elapsed = ck.get("step", 0), ck.get("elapsed", 0.0)
    print(f"resumed from {run / 'last.pt'} at epoch {st.start + 1} (step {st.step}, "
          f"{st.elapsed / 60:.1f} min trained, best val AUC {st.best:.4f})")


def validate(judged: nn.Module, metrics: dict, vsets: dict, monitor: dict) -> float:
    """AUC of `judged` on each validation set (and monitoring set) into `metrics`; returns the
    mean over the validation sets, which picks the checkpoint."""
    for c, (xv, yv) in vsets.items():
        metrics[f"val_auc_{c}"] = auc(yv, predict(judged, xv))
    for c, (xv, yv) in monitor.items():
        metrics[f"monitor_auc_{c}"] = auc(yv, predict(judged, xv))
    metrics["val_auc_mean"] = float(np.mean([metrics[f"val_auc_{c}"] for c in vsets]))
    return metrics["val_auc_mean"]


def validate_start(st: TrainState, run: Path, cfg: dict, vsets: dict, monitor: dict) -> None:
    """The starting weights on this run's validation sets, as epoch 0 (and best.pt): an epoch must
    beat them to be kept."""
    metrics = {"epoch": 0, "step": 0, "train_min": 0.0}
    st.best = validate(st.model, metrics, vsets, monitor)
    st.history.append(metrics)
    print(json.dumps(metrics), flush=True)
    _save({"model": st.model.state_dict(), "epoch": 0, "metrics": metrics, "config": cfg}, run / "best.pt")


def train_step(args, st: TrainState, batch, device: torch.device, lossf: nn.Module) -> tuple[float, float, int]:
    """One optimiser step (and weight-average update) on a batch: (loss, X-ray loss or 0, images)."""
    x = batch[0].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    y = batch[1].to(device, non_blocking=True)
    loss = lossf(st.model(x).reshape(-1), y)
    xray = 0.0
    if st.aux is not None:
        xloss = nn.functional.binary_cross_entropy_with_logits(st.aux(st.grid), batch[2].to(device, non_blocking=True))
        xray = xloss.item()
        loss = loss + args.xray * xloss
    st.opt.zero_grad(set_to_none=True)
    loss.backward()
    st.opt.step()
    if st.ema is not None:
        st.ema.update(st.model, st.step)
    return loss.item(), xray, len(y)


def train_epoch(args, cfg: dict, st: TrainState, train, epoch: int, t0: float, device: torch.device) -> dict:
    """The steps of one epoch (0-based), on pairs drawn anew, until the epoch or the run's schedule
    ends: the epoch's history entry, before validation."""
    from tqdm import tqdm

    ds = SBIPairs(train, args.size, args.margin, args.align, args.seed, epoch, p_bi=args.p_bi,
                  p_video=args.p_video, donors=st.donors, xray_grid=st.grid, p_occlude=args.p_occlude,
                  p_lowres=args.p_lowres, p_small=args.p_small, p_seamless=args.p_seamless,
                  p_frame=args.p_frame, p_clean=args.p_clean)
    g = torch.Generator().manual_seed(args.seed * 1000 + epoch)
    dl = DataLoader(ds, batch_size=args.batch // 2, shuffle=True, generator=g, drop_last=True,
                    collate_fn=collate, num_workers=args.workers,
                    persistent_workers=False, pin_memory=device.type == "cuda")
    st.model.train()
    if cfg.get("freeze_bn"):
        freeze_bn(st.model)
    lossf = nn.BCEWithLogitsLoss()
    running, n, xrun = 0.0, 0, 0.0
    bar = tqdm(total=st.steps, desc=f"epoch {epoch + 1}/{args.epochs}", unit="step", mininterval=5)
    it = iter(dl)
    for _ in range(st.steps):
        ts = time.time()
        if st.schedule.progress(st.step, st.elapsed) >= 1.0:
            break
        for pg in st.opt.param_groups:
            pg["lr"] = args.lr * st.schedule.lr_factor(st.step, st.elapsed)
        try:
            batch = next(it)
        except StopIteration:  # one pass over the faces done: the next one draws new pairs
            ds.cycle += 1
            it = iter(dl)
            batch = next(it)
        loss, xloss, k = train_step(args, st, batch, device, lossf)
        st.step += 1
        st.elapsed += time.time() - ts
        running += loss * k
        xrun += xloss * k
        n += k
        bar.set_postfix(loss=f"{running / n:.4f}", lr=f"{st.opt.param_groups[0]['lr']:.2e}",
                        **({"xray": f"{xrun / n:.4f}"} if st.aux is not None else {}))
        bar.update(1)
    bar.close()
    del it, dl
    metrics = {"epoch": epoch + 1, "step": st.step, "train_min": round(st.elapsed / 60, 2),
               "train_loss": running / max(1, n), "train_s": round(time.time() - t0, 1)}
    if st.aux is not None:
        metrics["train_xray_loss"] = xrun / max(1, n)
    return metrics


def end_epoch(st: TrainState, run: Path, cfg: dict, epoch: int, metrics: dict, t0: float,
              vsets: dict, monitor: dict) -> None:
    """Validate the epoch's weights (the moving average with --ema), keep them as best.pt when their
    mean AUC beats the best so far, and save last.pt (all that --resume needs) and history.json."""
    judged = st.ema.model if st.ema is not None else st.model
    score = validate(judged, metrics, vsets, monitor)
    metrics["epoch_s"] = round(time.time() - t0, 1)
    st.history.append(metrics)
    print(json.dumps(metrics), flush=True)
    if score > st.best:
        st.best = score
        _save({"model": judged.state_dict(), "epoch": epoch + 1, "metrics": metrics, "config": cfg},
              run / "best.pt")
    _save({"model": st.model.state_dict(), "opt": st.opt.state_dict(), "step": st.step, "elapsed": st.elapsed,
           "epoch": epoch, "best": st.best, "history": st.history, "config": cfg}
          | ({"ema": st.ema.model.state_dict()} if st.ema is not None else {})
          | ({"aux": st.aux.net.state_dict()} if st.aux is not None else {}), run / "last.pt")
    (run / "history.json").write_text(json.dumps(st.history, indent=1) + "\n")


def export_run(args, run: Path) -> int:
    """Hand the run's best checkpoint to training.export (ONNX, model.json, MODEL_CARD.md in --out)."""
    from training import export
    return export.main(["--run", str(run), "--out", args.out]
                       + (["--version", args.version] if args.version else []))


def main(argv=None) -> int:
    args = parse_args(argv)
    device = setup_torch(args)
    run, cfg = run_config(args, argv)
    train, vsets, monitor = load_data(args, cfg)
    model = init_model(args, cfg)
    (run / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")  # with freeze_bn, once it is known
    model = model.to(device, memory_format=torch.channels_last)
    print(f"training on {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                                     f" ({args.threads} threads)"))
    st = training_state(args, model, train, device)
    if args.resume and (run / "last.pt").exists():
        resume(st, run)
    if (args.init or args.init_onnx) and not st.history:
        validate_start(st, run, cfg, vsets, monitor)
    for epoch in range(st.start, args.epochs):
        if st.schedule.progress(st.step, st.elapsed) >= 1.0:
            print(f"time budget of {args.time_budget} min used up after {st.step} steps")
            break
        t0 = time.time()
        metrics = train_epoch(args, cfg, st, train, epoch, t0, device)
        end_epoch(st, run, cfg, epoch, metrics, t0, vsets, monitor)
    return export_run(args, run) if args.export else 0


if __name__ == "__main__":
    raise SystemExit(main())
