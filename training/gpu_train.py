"""Train the classifier on a GPU machine from a pack (training/gpu_pack.py), within a wall-clock
budget, and measure it there on the pack's held-out-source pictures.

    python -m training.gpu_train --pack training/gpu_pack.npz --out $OUT/verity-sbi-gpu --minutes 8 \
        [--backbone effnet-lite0] [--size 288] [--init imagenet|packed]

The recipe is training.train's best (`--p-bi 0.4 --p-clean-swap 0.5 --p-lowres 0.3 --p-seamless 0.3
--ema 0.999 --drop-rate 0.2 --weight-decay 0.01`, verity-sbi-research 1.4.0's): every sample a
pair, a real view of a packed face and its fake (a Self-Blended Image, or a cross-identity blend
with a donor face, half of those a careful same-source swap), made by
`training.views.make_view` in DataLoader workers (one per CPU). No H.264 here (PyAV is not on
the machine): --p-video 0. No OpenCV either: the gradient-domain fakes are pasted by numpy
(`sbi.membrane_clone`, NORMAL_CLONE only). The network trains with bf16 autocast on CUDA, from the pack's ImageNet
weights (--init imagenet) or from its exported model (--init packed: folded BatchNorms, kept
frozen, as `--init-onnx` trains them). The learning rate warms up, then follows a cosine over
the time left; the run stops when --minutes (everything, from the start of this command) are
used up, keeping for the end what the last validation, the evaluation and the saving take.

Every --epoch-steps steps the weight average (EMA) is validated on the pack's validation people
(the sets of `training.validation.selection_sets`, made alike: clean, half size + JPEG 50, and
cross-identity blends) and kept when its mean AUC is the best so far. At the end it is scored on
the pack's evaluation pictures (sources no run trained on: one score per picture, the highest
of its faces, as the runtime scores an image), with the pack's exported model beside it when there
is one: ROC-AUC per source and condition with 95% bootstrap intervals over people.

Written to --out (a run folder that `python -m training.export --run DIR` exports back on the
workstation, where the corpus and onnxruntime are): best.pt (the best EMA weights, config and
metrics, as training.train writes it), config.json, history.json, device_eval.json (the scores),
and model.onnx when `onnx` is importable there (uncalibrated; the export recalibrates).
Runs on the CPU too (--device auto), which is how it is smoke-tested: --minutes 0.5 --size 96
--limit 24.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from training import gpu_pack as P
from training.nets import BACKBONES, MEAN, STD, build_model, freeze_bn
from training.shift_eval import ci_text, people_bootstrap
from training.train import EMA, SBIPairs, Schedule, pick_device
from training.validation import VAL_CONDITIONS
from training.views import Donors, make_view

_SHARED: dict = {}
"""What the forked helper processes read: the validation faces, the donors, the eval faces."""


def _save(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


# --- data ------------------------------------------------------------------------------------

class PairStream(Dataset):
    """Item j of an endless stream of training pairs: pass j // n over the n faces, in that pass's
    own shuffled order; the pair is SBIPairs' (seeded by seed, pass and face), so no two passes draw
    the same fakes or degradations."""

    def __init__(self, pairs: SBIPairs) -> None:
        self.pairs, self.n = pairs, len(pairs)
        self._order: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, j: int):
        p, r = divmod(int(j), self.n)
        if self._order is None or self._order[0] != p:
            self._order = (p, np.random.default_rng([self.pairs.seed, 7, p]).permutation(self.n))
        self.pairs.epoch = p
        return self.pairs[int(self._order[1][r])]


class Endless(Sampler):
    """0, 1, 2, ... for ever: one DataLoader (and one set of workers) for the whole run."""

    def __iter__(self):
        return itertools.count()


def collate_u8(items):
    """Pairs -> (uint8 NHWC images, labels 0 real / 1 fake): a quarter of the bytes of float
    tensors through the workers' shared memory; normalised on the device (`normalise`)."""
    x = np.concatenate(items, 0)
    y = np.tile(np.array([0.0, 1.0], dtype=np.float32), len(items))
    return torch.from_numpy(x), torch.from_numpy(y)


def normalise(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (N, S, S, 3) -> the runtime's normalised float (N, 3, S, S), channels-last, on device
    (training.nets.to_tensor's arithmetic)."""
    x = x.to(device, non_blocking=True).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def _worker_init(_wid: int) -> None:
    torch.set_num_threads(1)
    P.ensure_crop_backend()


def _fork():
    return mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None


def _val_chunk(job) -> np.ndarray:
    """Crops lo..hi of one validation set, exactly as training.validation.validation_set makes them."""
    kind, degrade, lo, hi = job
    recs, (size, margin, align, seed) = _SHARED["val"], _SHARED["geom"]
    donors = _SHARED["donors"] if kind == "bi" else None
    out = []
    for i in range(lo, hi):
        for fake in (False, True):
            rng = np.random.default_rng([seed, 10_000_019, i, int(fake)])
            donor = donors.pick(i, rng) if fake and donors is not None else None
            out.append(make_view(recs[i], rng, fake, size, margin, align, False, degrade, donor=donor))
    return np.stack(out)


def _eval_chunk(job) -> np.ndarray:
    from detector.crops import crop_face

    size, lo, hi = job
    margins, align = _SHARED["eval_geom"]
    return np.stack([np.stack([crop_face(region, box, lms, size, margin=m, align=align) for m in margins])
                     for _, region, box, lms in _SHARED["eval"][lo:hi]])


def _parallel(fn, jobs: list, workers: int) -> list:
    ctx = _fork()
    if workers <= 1 or ctx is None or len(jobs) <= 1:
        return [fn(j) for j in jobs]
    with ctx.Pool(min(workers, len(jobs))) as pool:
        return pool.map(fn, jobs)


def _chunks(n: int, parts: int) -> list[tuple[int, int]]:
    step = max(1, -(-n // max(1, parts)))
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]


def validation_sets(val, size: int, margin: float, align: bool, seed: int, p_bi: float, workers: int) -> dict:
    """training.validation.selection_sets, made by `workers` processes: {name: (crops, labels)}."""
    _SHARED.update(val=val, geom=(size, margin, align, seed), donors=Donors(val) if p_bi > 0 else None)
    kinds = [(c, "sbi", d) for c, d in VAL_CONDITIONS.items()] + ([("bi", "bi", None)] if p_bi > 0 else [])
    sets = {}
    for name, kind, degrade in kinds:
        crops = _parallel(_val_chunk, [(kind, degrade, lo, hi) for lo, hi in _chunks(len(val), workers * 2)], workers)
        sets[name] = (np.concatenate(crops), np.tile(np.array([0, 1]), len(val)))
    return sets


def eval_crops(faces: list, sizes: set[int], margins: list[float], align: bool, workers: int) -> dict[int, np.ndarray]:
    """The classifier crops of the pack's evaluation faces at each input size: (faces, margins, S, S, 3)."""
    _SHARED.update(eval=faces, eval_geom=(list(margins), align))
    out = {}
    for s in sorted(sizes):
        parts = _parallel(_eval_chunk, [(s, lo, hi) for lo, hi in _chunks(len(faces), workers * 2)], workers)
        out[s] = np.concatenate(parts) if parts else np.zeros((0, len(margins), s, s, 3), np.uint8)
    return out


# --- network ---------------------------------------------------------------------------------

def load_weights(model: nn.Module, arrays: dict[str, np.ndarray], what: str) -> None:
    """A packed state_dict into model: everything but the head (ImageNet) or all of it."""
    state = {k: torch.from_numpy(v) for k, v in arrays.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    head = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    if unexpected or any(not k.startswith(head + ".") for k in missing):
        raise SystemExit(f"the pack's {what} weights do not fit this network: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")


@torch.no_grad()
def logits(model: nn.Module, crops: np.ndarray, device: torch.device, batch: int = 256) -> np.ndarray:
    """Logits of uint8 crops (float32 weights and arithmetic, as the export checks them)."""
    model.eval()
    out = [model(normalise(torch.from_numpy(crops[i:i + batch]), device)).reshape(-1).float().cpu()
           for i in range(0, len(crops), batch)]
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def view_logits(model: nn.Module, crops: np.ndarray, device: torch.device) -> np.ndarray:
    """One logit per face of (faces, V, S, S, 3) crops, read as the runtime reads a face's crops
    (detector/classifier.py with tta.hflip and tta.margins): the mean of every crop's and its
    mirror image's logits."""
    n, v = crops.shape[:2]
    flat = crops.reshape(n * v, *crops.shape[2:])
    both = logits(model, flat, device) + logits(model, np.ascontiguousarray(flat[:, :, ::-1]), device)
    return (both / 2).reshape(n, v).mean(axis=1) if n else np.zeros(0, np.float32)


def roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC-AUC with ties as halves (detector.evaluation.roc_auc); nan without both classes."""
    from detector.evaluation import roc_auc as auc

    y = np.asarray(y)
    return auc(y, s) if 0 < y.sum() < len(y) else float("nan")


def validate(model: nn.Module, vsets: dict, device: torch.device, metrics: dict) -> float:
    for c, (xv, yv) in vsets.items():
        metrics[f"val_auc_{c}"] = roc_auc(yv, logits(model, xv, device))
    metrics["val_auc_mean"] = float(np.mean([metrics[f"val_auc_{c}"] for c in vsets]))
    return metrics["val_auc_mean"]


# --- the evaluation on held-out sources ------------------------------------------------------

def picture_scores(pictures: list[dict], faces: list, face_logits: np.ndarray) -> np.ndarray:
    """One score per picture: the highest logit of its faces (nan where none was found)."""
    out = np.full(len(pictures), -np.inf)
    for (pic, *_), z in zip(faces, face_logits):
        out[pic] = max(out[pic], float(z))
    out[~np.isfinite(out)] = np.nan
    return out


def device_report(pictures: list[dict], scores: dict[str, np.ndarray], resamples: int) -> tuple[str, list[dict]]:
    """Markdown table: per source and condition (and all sources, and per family), each model's
    ROC-AUC of the pictures with a face, 95% interval over people, and the difference of the last
    model from the first."""
    names = list(scores)
    conds = sorted({p["condition"] for p in pictures}, key=lambda c: (c != "original", c))
    sources = sorted({p["source"] for p in pictures})
    families = sorted({p["family"] for p in pictures} - {"real"})
    cells = [(s, "all", c) for s in sources + ["all"] for c in conds] + [("all", f, c) for f in families for c in conds]
    head = ["source", "fakes", "condition", "real", "fake"] + names + ([f"{names[-1]} − {names[0]}"] if len(names) > 1 else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = []
    for src, fam, cond in cells:
        sel = [i for i, p in enumerate(pictures) if p["condition"] == cond and (src == "all" or p["source"] == src)
               and (fam == "all" or p["family"] in ("real", fam)) and all(np.isfinite(scores[n][i]) for n in names)]
        y = np.array([pictures[i]["label"] for i in sel])
        if len(sel) < 4 or not 0 < y.sum() < len(y):
            continue
        s = [scores[n][sel] for n in names]
        unit = np.array([pictures[i]["unit"] for i in sel])
        b = people_bootstrap(y, s, unit, resamples)
        aucs = [roc_auc(y, v) for v in s]
        row = {"source": src, "fakes": fam, "condition": cond, "real": int((y == 0).sum()), "fake": int(y.sum()),
               "auc": dict(zip(names, aucs))}
        out = [src, fam, cond, str(row["real"]), str(row["fake"])] + [f"{a:.3f}{ci_text(b[:, i])}" for i, a in enumerate(aucs)]
        if len(names) > 1:
            out.append(f"{aucs[-1] - aucs[0]:+.3f}{ci_text(b[:, -1] - b[:, 0])}")
            row["difference"] = aucs[-1] - aucs[0]
        rows.append(row)
        lines.append("| " + " | ".join(out) + " |")
    return "\n".join(lines), rows


# --- main ------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m training.gpu_train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pack", default="training/gpu_pack.npz")
    p.add_argument("--out", required=True, help="run folder to write (e.g. $OUT/verity-sbi-gpu)")
    p.add_argument("--minutes", type=float, default=8.0, help="wall-clock budget of the whole command")
    p.add_argument("--backbone", default=None, choices=BACKBONES, help="default: the pack's")
    p.add_argument("--size", type=int, default=288, help="classifier input size")
    p.add_argument("--init", default="imagenet", choices=("imagenet", "packed"),
                   help="start from the pack's ImageNet weights, or from its exported model (frozen BatchNorms)")
    p.add_argument("--batch", type=int, default=128, help="images per step (half real, half fake)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 8e-4 from ImageNet, "
                   "4e-4 from the exported model: training.train's at batch 32, times 2 at batch 128)")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--drop-rate", type=float, default=0.2)
    p.add_argument("--p-bi", type=float, default=0.4)
    p.add_argument("--p-lowres", type=float, default=0.3)
    p.add_argument("--p-seamless", type=float, default=0.3,
                   help="fakes pasted in the gradient domain first (sbi.gradient_blend: OpenCV's "
                        "seamlessClone, or numpy's sbi.membrane_clone where cv2 is not importable)")
    p.add_argument("--p-video", type=float, default=0.0, help="H.264 like a video frame (needs PyAV)")
    p.add_argument("--p-frame", type=float, default=0.0,
                   help="pairs that start from a still of a video (sbi.video_still; needs PyAV)")
    p.add_argument("--p-clean-swap", dest="p_clean", type=float, default=0.5,
                   help="share of the cross-identity blends made as a careful tool's swap (training.train's option)")
    p.add_argument("--warmup-steps", type=int, default=200)
    p.add_argument("--epoch-steps", type=int, default=300, help="steps between validations")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: the time decides)")
    p.add_argument("--reserve", type=float, default=40.0,
                   help="seconds kept, beside the last validation, for the evaluation and the files at the end")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DataLoader worker processes")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: 4 on CUDA, 2 on CPU)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0,
                   help="only N training and N validation faces (spread over them) and the first N eval pictures")
    p.add_argument("--resamples", type=int, default=500, help="bootstrap resamples of the evaluation")
    p.add_argument("--no-onnx", dest="onnx", action="store_false", help="do not try the ONNX export here")
    return p.parse_args(argv)


def run_config(args, pack: P.Pack, out: Path, device: torch.device, argv) -> dict:
    """The run's config: the packed run's (its corpus, splits and cache, which the export reads back
    on the workstation) with this run's recipe."""
    cfg = dict(pack.meta["config"])
    init = pack.meta["weights"].get("init") if args.init == "packed" else None
    faces = pack.meta["faces"]
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else f"the CPU ({args.threads} threads)"
    cfg.update({
        "out": str(out), "name": out.name, "backbone": args.backbone, "size": args.size, "batch": args.batch,
        "lr": args.lr, "weight_decay": args.weight_decay, "ema": args.ema, "drop_rate": args.drop_rate,
        "p_bi": args.p_bi, "p_lowres": args.p_lowres, "p_seamless": args.p_seamless, "p_video": args.p_video,
        "p_frame": args.p_frame, "p_clean": args.p_clean,
        "p_occlude": 0.0, "xray": 0.0,
        "seed": args.seed, "time_budget": args.minutes, "steps_per_epoch": args.epoch_steps, "epochs": 0,
        "val_swaps": False, "device": device.type, "workers": args.workers, "threads": args.threads,
        "init": None, "init_onnx": init["onnx"] if init else None, "freeze_bn": bool(init),
        "gpu_pack": {"file": str(args.pack), "side": faces["side"], "quality": faces["quality"],
                     "from_run": pack.meta.get("run"), "limit": args.limit},
        "hardware": f"Trained on {gpu}, torch {torch.__version__}"
                    + (", bf16 autocast" if device.type == "cuda" else "")
                    + f", {args.workers} data workers, by training.gpu_train from a pack of the faces at "
                      f"{faces['side']} px of the {cfg.get('cache_size', 384)} px cache, JPEG quality {faces['quality']}",
        "command": "python -m training.gpu_train " + " ".join(sys.argv[1:] if argv is None else argv),
    })
    return cfg


def prepare(args, pack: P.Pack) -> tuple:
    """(train faces, validation sets, eval pictures, eval faces, their crops by size, init size)."""
    cfg = pack.meta["config"]
    margin, align = float(cfg["margin"]), bool(cfg["align"])
    workers = max(1, args.workers)
    t = time.time()
    train = pack.records("train", args.limit, threads=workers)
    val = pack.records("val", args.limit, threads=workers)
    print(f"faces: train {len(train)} ({len({r.identity for r in train})} ids), val {len(val)} "
          f"({len({r.identity for r in val})} ids), packed at {pack.meta['faces']['side']} px q"
          f"{pack.meta['faces']['quality']} ({time.time() - t:.1f} s)", flush=True)
    t = time.time()
    vsets = validation_sets(val, args.size, margin, align, args.seed, args.p_bi, workers)
    print(f"validation sets: {', '.join(f'{k} {len(v[1])}' for k, v in vsets.items())} crops ({time.time() - t:.1f} s)",
          flush=True)
    pictures, faces = pack.eval_faces(args.limit)
    init = pack.meta["weights"].get("init")
    sizes = {args.size} | ({int(init["size"])} if init else set())
    margins = pack.eval_margins
    crops = eval_crops(faces, sizes, margins, align, workers) if faces else {}
    if faces:
        print(f"evaluation: {len(pictures)} pictures, {len(faces)} faces "
              f"({', '.join(sorted({p['source'] for p in pictures}))}), cropped at margins {margins} and mirrored",
              flush=True)
    return train, vsets, pictures, faces, crops, (int(init["size"]) if init else None)


def build(args, pack: P.Pack, device: torch.device) -> nn.Module:
    model = build_model(args.backbone, pretrained=False, drop_rate=args.drop_rate)
    which = "imagenet" if args.init == "imagenet" else "init"
    arrays = pack.weights(which)
    if not arrays:
        raise SystemExit(f"--init {args.init}: the pack holds no {which} weights")
    load_weights(model, arrays, which)
    return model.to(device, memory_format=torch.channels_last)


def main(argv=None) -> int:
    t_start = time.time()
    args = parse_args(argv)
    crops_by = P.ensure_crop_backend()
    pack = P.load_pack(args.pack)
    args.backbone = args.backbone or pack.meta["backbone"]
    if args.backbone != pack.meta["backbone"]:
        raise SystemExit(f"--backbone {args.backbone}: the pack's weights are {pack.meta['backbone']}")
    if args.p_video > 0:
        import av  # noqa: F401  (a clear ImportError here, not in a worker)
    if args.p_seamless > 0 and importlib.util.find_spec("cv2") is None:
        print(f"--p-seamless {args.p_seamless}: OpenCV (cv2) is not on this machine, so the gradient-domain "
              "fakes are pasted by numpy (sbi.membrane_clone, NORMAL_CLONE only)", flush=True)
    args.lr = args.lr or (8e-4 if args.init == "imagenet" else 4e-4)
    device = pick_device(args.device)
    args.threads = args.threads or (4 if device.type == "cuda" else 2)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = run_config(args, pack, out, device, argv)
    print(f"device {device} ({cfg['hardware']}); crops by {crops_by}; lr {args.lr}, batch {args.batch}, "
          f"size {args.size}, init {args.init}", flush=True)
    train, vsets, pictures, faces, ecrops, init_size = prepare(args, pack)
    model = build(args, pack, device)
    (out / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")

    ema = EMA(model, args.ema) if args.ema > 0 else None
    donors = Donors(train) if args.p_bi > 0 else None
    pairs = SBIPairs(train, args.size, float(cfg["margin"]), bool(cfg["align"]), args.seed, 0, p_bi=args.p_bi,
                     p_video=args.p_video, donors=donors, p_lowres=args.p_lowres, p_seamless=args.p_seamless,
                     p_frame=args.p_frame, p_clean=args.p_clean)
    workers = max(0, args.workers)
    ctx = _fork()
    dl = DataLoader(PairStream(pairs), batch_size=max(1, args.batch // 2), sampler=Endless(), collate_fn=collate_u8,
                    num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                    prefetch_factor=4 if workers else None, multiprocessing_context=ctx if workers else None,
                    worker_init_fn=_worker_init if workers else None)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    lossf = nn.BCEWithLogitsLoss()
    amp = device.type == "cuda"
    history: list[dict] = []
    best, best_state, best_epoch = -1.0, None, 0
    judged = ema.model if ema is not None else model

    def keep(epoch: int, metrics: dict) -> None:
        nonlocal best, best_state, best_epoch
        score = metrics["val_auc_mean"]
        if score > best:
            best, best_epoch = score, epoch
            best_state = {k: v.detach().float().cpu().clone() if v.dtype.is_floating_point else v.detach().cpu().clone()
                          for k, v in judged.state_dict().items()}
            _save({"model": best_state, "epoch": epoch, "metrics": metrics, "config": cfg}, out / "best.pt")
        (out / "history.json").write_text(json.dumps(history, indent=1) + "\n")

    val_s = 10.0
    if args.init == "packed":  # the starting weights are epoch 0: an epoch has to beat them
        t = time.time()
        metrics = {"epoch": 0, "step": 0, "train_min": 0.0}
        validate(judged, vsets, device, metrics)
        val_s = time.time() - t
        history.append(metrics)
        print(json.dumps(metrics), flush=True)
        keep(0, metrics)

    t_train = time.time()
    budget = t_start + args.minutes * 60 - t_train - args.reserve - val_s
    schedule = Schedule(args.max_steps or 10 ** 9, max(1, args.warmup_steps), max(1.0, budget))
    step, epoch, it, done = 0, 0, iter(dl), False
    print(f"training for up to {budget / 60:.1f} min ({time.time() - t_start:.0f} s spent getting ready)", flush=True)
    while not done:
        epoch += 1
        t_ep, wait, n, running = time.time(), 0.0, 0, torch.zeros((), device=device)
        model.train()
        if cfg["freeze_bn"]:
            freeze_bn(model)
        for _ in range(args.epoch_steps):
            now = time.time()
            if now >= t_start + args.minutes * 60 - args.reserve - val_s or (args.max_steps and step >= args.max_steps):
                done = True
                break
            for g in opt.param_groups:
                g["lr"] = args.lr * schedule.lr_factor(step, now - t_train)
            x, y = next(it)
            wait += time.time() - now
            x, y = normalise(x, device), y.to(device, non_blocking=True)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                z = model(x).reshape(-1)
            loss = lossf(z.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update(model, step)
            running += loss.detach() * len(y)
            n += len(y)
            step += 1
        if n == 0:
            break
        train_s = time.time() - t_ep
        t = time.time()
        metrics = {"epoch": epoch, "step": step, "train_min": round((time.time() - t_train) / 60, 2),
                   "train_loss": float(running) / n, "lr": opt.param_groups[0]["lr"],
                   "images_per_s": round(n / train_s, 1), "data_wait": round(wait / train_s, 3),
                   "train_s": round(train_s, 1)}
        validate(judged, vsets, device, metrics)
        val_s = time.time() - t
        metrics["epoch_s"] = round(time.time() - t_ep, 1)
        history.append(metrics)
        print(json.dumps(metrics), flush=True)
        keep(epoch, metrics)
    del it, dl
    cfg["epochs"] = epoch if history and history[-1]["epoch"] == epoch else epoch - 1
    if best_state is None:
        raise SystemExit("no step was made: raise --minutes")
    _save({"model": best_state, "epoch": best_epoch, "metrics": next(h for h in history if h["epoch"] == best_epoch),
           "config": cfg}, out / "best.pt")
    (out / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")
    print(f"best epoch {best_epoch} of {cfg['epochs']} ({step} steps), mean validation AUC {best:.4f}", flush=True)

    final = build_model(args.backbone, pretrained=False, drop_rate=args.drop_rate)
    final.load_state_dict(best_state)
    final = final.to(device, memory_format=torch.channels_last)
    if faces:
        evaluate(args, pack, device, final, pictures, faces, ecrops, init_size, out)
    if args.onnx:
        export_onnx(final.cpu(), args.size, out / "model.onnx")
    print(f"done in {(time.time() - t_start) / 60:.1f} min. Back on the workstation: training/run_gpu.sh import "
          f"<this {out.name} folder> (export, then the source-held-out comparison; training/README.md, "
          f"'On a GPU')", flush=True)
    return 0


def evaluate(args, pack: P.Pack, device, final: nn.Module, pictures, faces, ecrops, init_size, out: Path) -> None:
    """Scores of the trained network (and of the pack's exported model) on the evaluation pictures:
    printed as a table and written to device_eval.json."""
    t = time.time()
    scores = {}
    init = pack.meta["weights"].get("init")
    if init and init_size:
        start = build_model(args.backbone, pretrained=False, drop_rate=0.0)
        load_weights(start, pack.weights("init"), "init")
        start = start.to(device, memory_format=torch.channels_last)
        scores[f"{init.get('name')} {init.get('version')} @{init_size}"] = picture_scores(
            pictures, faces, view_logits(start, ecrops[init_size], device))
    for base in pack.meta.get("eval_baselines", []):  # scored on the workstation, the runtime's way
        scores[f"{base['name']} {base['version']} (runtime)"] = picture_scores(  # faces: a prefix (--limit)
            pictures, faces, np.asarray(base["scores"], np.float64)[:len(faces)])
    scores[f"trained @{args.size}"] = picture_scores(pictures, faces, view_logits(final, ecrops[args.size], device))
    table, rows = device_report(pictures, scores, args.resamples)
    no_face = int(np.isnan(next(iter(scores.values()))).sum())
    print(f"\nDevice evaluation: held-out-source single pictures, one score per picture (its highest face: the mean "
          f"logit of its crops at margins {pack.eval_margins} "
          f"and their mirrors), "
          f"ROC-AUC [95% bootstrap over people, {args.resamples} resamples]; {no_face} pictures without a face "
          f"left out ({time.time() - t:.0f} s)\n\n{table}\n", flush=True)
    (out / "device_eval.json").write_text(json.dumps({
        "pictures": pictures, "scores": {k: [None if not np.isfinite(v) else round(float(v), 5) for v in s]
                                         for k, s in scores.items()},
        "table": rows}) + "\n")


def export_onnx(model: nn.Module, size: int, path: Path) -> None:
    """model.onnx as training.export writes it (opset 17, dynamic batch), when onnx is importable."""
    try:
        import onnx
    except ImportError:
        print("onnx is not importable here: the ONNX export is done back on the workstation "
              "(python -m training.export --run ...)", flush=True)
        return
    import warnings

    model.eval()
    try:
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice, which export.py uses too
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (torch.randn(2, 3, size, size),), str(path), input_names=["input"],
                              output_names=["logit"], dynamic_axes={"input": {0: "batch"}, "logit": {0: "batch"}},
                              opset_version=17, dynamo=False)
        onnx.checker.check_model(onnx.load(str(path)))
        print(f"wrote {path} (uncalibrated: the export back on the workstation calibrates it)", flush=True)
    except Exception as e:  # noqa: BLE001  (best.pt is what matters; the workstation exports it again)
        print(f"ONNX export failed here ({type(e).__name__}: {e}); best.pt is what the workstation exports", flush=True)
        path.unlink(missing_ok=True)


if __name__ == "__main__":
    raise SystemExit(main())
