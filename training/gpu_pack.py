"""Pack a training run for a GPU machine: one .npz with the run's faces, starting weights and a
small evaluation set, for a machine that has torch and timm but not this corpus, no network, and
none of onnxruntime, PyAV or OpenCV.

    python -m training.gpu_pack --run training/configs/verity-sbi-research.json --out training/gpu_pack.npz \
        --max-mib 26 --eval-mib 3

What goes in (numpy arrays only; the reader `load_pack` needs numpy and Pillow, no torch):

faces    the run's training and validation faces (its --real folders and splits file, read as
         `training.data.load_split_records(cfg)` reads them; the test people stay behind), each
         the part of its cached crop that a classifier crop can reach (`reach`: the crop margin
         rotated by the eye line, box jitter included), resized to at most `side`/cache size of
         the cache (a face with less detail than that stays at its own, `FaceRecord.native_view`)
         and JPEG-encoded; box, 5 landmarks (cache pixels), identity, source, frame. The side
         and quality are the best of `LADDER` that fit the budget (or --side/--quality).
weights  state_dicts, conv weights in float16 and small tensors in float32: the ImageNet
         backbone of `training.nets.build_model` (head left out), and with --init-onnx (by
         default the run's own --init-onnx, when it fits) that exported model, BatchNorms
         folded as `training.nets.load_fused_onnx` reads it.
eval     face crops of held-out-source single pictures of a `training.shift_eval` folder
         (default faces-lfw and talking-faces, every family, real and fake), under the
         conditions original and jpeg50 applied to the whole picture first
         (`detector.evaluation.apply_condition`), faces found by the runtime's detector: per face
         the part of the picture its classifier crop reads (at most --eval-crop-px across), with
         box and landmarks in it, so that the device crops at any input size and at any margin up
         to the run's (`--eval-margins`, by default the shipped model's crop.margin and
         tta.margins: the device averages a face's crops and their mirrors, as the runtime does).
         People are left out (from the source taking the most room) until the set fits --eval-mib.
meta     JSON: the run's config, what was packed and how.

The file must fit --max-mib (the device tool carries 64 MiB with the working tree): when even
the smallest faces do not fit, it stops and says what took the room.

`ensure_crop_backend()` gives `detector.crops` a Pillow stand-in where OpenCV cannot load (the
crops the models up to 2.0.0 were trained with; tests/test_gpu_pack.py checks it against
OpenCV's).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import types
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from detector.crop_geometry import crop_transform, crop_unrotated
from training import data as D

PACK_VERSION = 1
LADDER = tuple([(s, q) for s in (384, 352, 320, 288, 256) for q in (90, 85)]
               + [(s, q) for s in (224, 192, 160) for q in (85, 80, 75)])
"""(side, JPEG quality) of the packed faces, best first; side is of the full cached square."""
JITTER = 0.04
"""`training.views.jitter_box`'s default: each box side moves by up to this much of the face."""
EVAL_SOURCES = ("faces-lfw", "talking-faces")
EVAL_CONDITIONS = ("original", "jpeg50")
EVAL_MAX_FACES = 4
OVERHEAD_MIB = 0.1
"""Room kept beside what is measured (the zip directory)."""
FACE_ARRAY_BYTES = 80
"""Compressed bytes per face of its arrays beside the JPEG (box, landmarks, offsets, names)."""
MIB = 2 ** 20
SHIPPED = Path(__file__).resolve().parents[1] / "models" / "verity-sbi"


# --- crops without OpenCV ------------------------------------------------------------------

def pillow_crop_face(image, box, landmarks, size: int, margin: float = 1.3, align: bool = False) -> np.ndarray:
    """`detector.crops.crop_face` with Pillow only: its reduce by the whole factor and its bilinear
    affine transform (what the models up to 2.0.0 were trained with; OpenCV's warp gives the same
    within one grey level), and Pillow's crop-and-resize on the large unrotated path."""
    if isinstance(image, Image.Image):
        image = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    cx, cy, side, angle = crop_transform(box, landmarks, margin, align)
    k = side / size
    if not align and k > 2.0:
        return crop_unrotated(image, cx, cy, side, size)
    r = int(k) if align and k >= 2.0 else 1
    pil = Image.fromarray(np.ascontiguousarray(image))
    if r > 1:
        pil, cx, cy, k = pil.reduce(r), cx / r, cy / r, k / r
    a, b = math.cos(angle) * k, -math.sin(angle) * k
    d, e = math.sin(angle) * k, math.cos(angle) * k
    c, f = cx - (a + b) * size / 2, cy - (d + e) * size / 2
    return np.asarray(pil.transform((size, size), Image.AFFINE, (a, b, c, d, e, f), resample=Image.BILINEAR))


def ensure_crop_backend() -> str:
    """"opencv" when `detector.crops` imports; else installs a Pillow `detector.crops` (crop_face,
    crop_transform) in sys.modules and says "pillow". Call it before anything crops."""
    try:
        import detector.crops
        return "opencv"
    except ImportError:
        import detector

        mod = types.ModuleType("detector.crops")
        mod.__doc__ = "Pillow stand-in for detector.crops (OpenCV absent): training.gpu_pack"
        mod.crop_face, mod.crop_transform = pillow_crop_face, crop_transform
        sys.modules["detector.crops"] = mod
        detector.crops = mod
        return "pillow"


# --- geometry --------------------------------------------------------------------------------

def reach(box, landmarks, margin: float, align: bool, jitter: float = JITTER) -> float:
    """Half side of the square around the box centre that a classifier crop of this face can read:
    the crop (margin x the longer box side, grown by the box jitter) turned by the eye line, its
    centre moved by the jitter, plus 2 px for the bilinear neighbours."""
    x1, y1, x2, y2 = (float(v) for v in box)
    s = max(x2 - x1, y2 - y1)
    _, _, _, angle = crop_transform(box, landmarks, margin, align)
    spread = abs(math.cos(angle)) + abs(math.sin(angle))
    return (margin * (1 + 2 * jitter) / 2 * spread + jitter) * s + 2.0


def jpeg_encode(rgb: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, "JPEG", quality=int(quality), optimize=True)
    return buf.getvalue()


def zipped_size(arrays: dict[str, np.ndarray]) -> int:
    """Bytes that these arrays take in a np.savez_compressed file."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.tell()


def jpeg_decode(data: bytes | np.ndarray) -> np.ndarray:
    with Image.open(io.BytesIO(bytes(data))) as im:
        return np.asarray(im.convert("RGB"))


# --- faces -----------------------------------------------------------------------------------

def face_canvas_side(rec: D.FaceRecord, side: int) -> int:
    """Side of a face's packed square: the cache size capped at `side`, or less where the face had
    less detail (`native_view`'s own side)."""
    size = rec.image.shape[0]
    own = size if rec.native >= 0.95 else max(32, round(size * rec.native))
    return min(own, side, size)


def pack_face(rec: D.FaceRecord, side: int, quality: int, margin: float, align: bool,
              context: float = 1.0) -> tuple[bytes, int, int, int]:
    """(JPEG of the reachable part, canvas side n, its left and top in the n-pixel canvas)."""
    size = rec.image.shape[0]
    n = face_canvas_side(rec, side)
    view = rec.native_view()[0]
    if view.shape[0] == n:
        canvas = view
    else:
        canvas = np.asarray(Image.fromarray(rec.image).resize((n, n), Image.LANCZOS))
    k = n / size
    cx, cy = (rec.box[0] + rec.box[2]) / 2 * k, (rec.box[1] + rec.box[3]) / 2 * k
    he = reach(rec.box, rec.landmarks, margin, align) * k * context
    x0, y0 = max(0, math.floor(cx - he)), max(0, math.floor(cy - he))
    x1, y1 = min(n, math.ceil(cx + he)), min(n, math.ceil(cy + he))
    return jpeg_encode(canvas[y0:y1, x0:x1], quality), n, x0, y0


def unpack_canvas(data, n: int, x0: int, y0: int) -> np.ndarray:
    """The n x n canvas of a packed face: its stored part in place, the edge pixels repeated
    beyond it (no classifier crop reads there; a repeated edge keeps resampling filters quiet)."""
    part = jpeg_decode(data)
    h, w = part.shape[:2]
    return np.pad(part, ((y0, n - y0 - h), (x0, n - x0 - w), (0, 0)), mode="edge")


class PackedFace(D.FaceRecord):
    """A face out of a pack. `native_view()` gives the packed canvas (its detail), `image` the same
    at the cache's size, as a cached face is (make_view measures the view against it)."""

    def __init__(self, canvas: np.ndarray, cache_size: int, box, landmarks, identity: str, source: str,
                 frame: int, face: int = 0) -> None:
        n = canvas.shape[0]
        image = canvas if n == cache_size else np.asarray(
            Image.fromarray(canvas).resize((cache_size, cache_size), Image.BILINEAR))
        super().__init__(image, np.asarray(box, np.float32), np.asarray(landmarks, np.float32), identity,
                         source, int(frame), n / cache_size, int(face))
        self.canvas = canvas

    def native_view(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n, size = self.canvas.shape[0], self.image.shape[0]
        if n == size:
            return self.image, self.box, self.landmarks
        k = n / size
        return self.canvas, (self.box * k).astype(np.float32), (self.landmarks * k).astype(np.float32)

    def __reduce__(self):  # the slots dataclass would pickle its fields only, not the canvas
        return (PackedFace, (self.canvas, self.image.shape[0], self.box, self.landmarks, self.identity,
                             self.source, self.frame, self.face))


@dataclass
class FacePart:
    """The packed faces of one (side, quality): arrays for the file and their byte count."""
    side: int
    quality: int
    arrays: dict
    nbytes: int


def pack_faces(parts: dict[str, list[D.FaceRecord]], side: int, quality: int, margin: float,
               align: bool) -> FacePart:
    """Every face of parts["train"] and parts["val"], packed at (side, quality)."""
    blobs, meta = [], []
    for split in ("train", "val"):
        for rec in parts.get(split, []):
            data, n, x0, y0 = pack_face(rec, side, quality, margin, align)
            blobs.append(data)
            meta.append((split, rec, n, x0, y0))
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    arrays = {
        "face_jpeg": np.frombuffer(b"".join(blobs), np.uint8),
        "face_offsets": offsets,
        "face_geom": np.array([(n, x0, y0) for _, _, n, x0, y0 in meta], np.int32).reshape(-1, 3),
        "face_box": np.array([m[1].box for m in meta], np.float32).reshape(-1, 4),
        "face_landmarks": np.array([m[1].landmarks for m in meta], np.float32).reshape(-1, 5, 2),
        "face_native": np.array([m[1].native for m in meta], np.float32),
        "face_frame": np.array([m[1].frame for m in meta], np.int32),
        "face_index": np.array([m[1].face for m in meta], np.int16),
        "face_split": np.array([m[0] for m in meta], dtype="U5"),
        "face_identity": np.array([m[1].identity for m in meta], dtype=str),
        "face_source": np.array([m[1].source for m in meta], dtype=str),
    }
    return FacePart(side, quality, arrays, sum(a.nbytes for a in arrays.values()))


def estimate_faces(records: list[D.FaceRecord], side: int, quality: int, margin: float, align: bool,
                   total: int) -> int:
    """Compressed bytes of the JPEGs of `total` faces packed at (side, quality), from a sample of
    `records` (deflate still finds a little in neighbouring JPEGs: their headers)."""
    blobs = b"".join(pack_face(r, side, quality, margin, align)[0] for r in records)
    return int(len(zlib.compress(blobs, 6)) / len(records) * total * 1.02)


# --- weights ---------------------------------------------------------------------------------

def state_arrays(prefix: str, state: dict) -> dict[str, np.ndarray]:
    """A torch state_dict as arrays named prefix/key: floating tensors of 4096 values or more in
    float16, smaller ones (biases, BatchNorm statistics) in float32; integer counters left out."""
    out = {}
    for k, v in state.items():
        a = v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
        if not np.issubdtype(a.dtype, np.floating):
            continue
        out[f"{prefix}/{k}"] = a.astype(np.float16 if a.size >= 4096 else np.float32)
    return out


def imagenet_weights(backbone: str) -> dict[str, np.ndarray]:
    """The ImageNet backbone of training.nets.build_model, without its (random) one-logit head."""
    from torch import nn

    from training.nets import build_model

    model = build_model(backbone, pretrained=True)
    head = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    return state_arrays("imagenet", {k: v for k, v in model.state_dict().items()
                                     if k not in (f"{head}.weight", f"{head}.bias")})


def onnx_weights(backbone: str, path: str, drop_rate: float, size: int) -> dict[str, np.ndarray]:
    """An exported model's weights (training.nets.load_fused_onnx: folded BatchNorms)."""
    from training.nets import build_model, load_fused_onnx

    model = build_model(backbone, pretrained=False, drop_rate=drop_rate)
    load_fused_onnx(model, path, size)
    return state_arrays("init", model.state_dict())


# --- evaluation set --------------------------------------------------------------------------

def eval_region(rgb: np.ndarray, face, margin: float, align: bool, max_crop: int):
    """The part of a picture that the classifier crop of `face` reads: (pixels, box, landmarks in
    them). At native resolution on the 16-pixel grid of the picture (its JPEG blocks, so that
    re-encoding it changes little) unless the crop would be wider than max_crop pixels: then the
    picture is first shrunk to that."""
    box = np.asarray(face.box, np.float64)
    lms = np.asarray(face.landmarks, np.float64)
    side = max(box[2] - box[0], box[3] - box[1]) * margin
    t = min(1.0, max_crop / max(side, 1.0))
    grid = 16
    if t < 1.0:
        h, w = rgb.shape[:2]
        rgb = np.asarray(Image.fromarray(rgb).resize((max(1, round(w * t)), max(1, round(h * t))), Image.LANCZOS))
        box, lms, grid = box * t, lms * t, 1
    he = reach(box, lms, margin, align, jitter=0.0) + 1
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    h, w = rgb.shape[:2]
    x0, y0 = max(0, math.floor(cx - he)), max(0, math.floor(cy - he))
    x0, y0 = x0 - x0 % grid, y0 - y0 % grid
    x1, y1 = min(w, -(-math.ceil(cx + he) // grid) * grid), min(h, -(-math.ceil(cy + he) // grid) * grid)
    if x1 <= x0 or y1 <= y0:
        return None
    off = np.array([x0, y0], np.float64)
    return (rgb[y0:y1, x0:x1], (box.reshape(2, 2) - off).reshape(4).astype(np.float32),
            (lms - off).astype(np.float32))


@dataclass
class EvalPart:
    arrays: dict
    pictures: list
    nbytes: int
    people: dict = field(default_factory=dict)   # source -> (kept, available)


def eval_items(folder: Path, sources=EVAL_SOURCES) -> list[dict]:
    """The single pictures of a training.shift_eval folder from `sources`."""
    index = folder / "items.json"
    if not index.exists():
        raise SystemExit(f"--eval-dir {folder}: no items.json (build it: python -m training.shift_eval --out {folder})")
    rows = json.loads(index.read_text())["items"]
    return [r for r in rows if r["source"] in sources and r["layout"] == "single"]


def pack_eval(folder: Path, items: list[dict], margin: float, align: bool, max_crop: int, quality: int,
              max_bytes: int, conditions=EVAL_CONDITIONS, face_detector=None, log=print) -> EvalPart:
    """Crops of `items` under `conditions`; while they do not fit max_bytes, the source taking the
    most room drops a person (the last of its sorted list)."""
    from detector.evaluation import apply_condition

    if face_detector is None:
        from detector.faces import FaceDetector, retinaface_onnx_bytes
        from detector.runtime import make_session

        face_detector = FaceDetector(make_session(retinaface_onnx_bytes(), "cpu", threads=2)[0])
    per_unit: dict[str, list] = {}
    for n, item in enumerate(items):
        rgb = D.load_image(folder / item["path"])
        for cond in conditions:
            pic = apply_condition(rgb, cond)
            faces = sorted(face_detector.detect(pic), key=lambda f: -f.width * f.height)[:EVAL_MAX_FACES]
            crops = []
            for f in faces:
                got = eval_region(pic, f, margin, align, max_crop)
                if got is not None:
                    crops.append((jpeg_encode(got[0], quality), got[1], got[2]))
            per_unit.setdefault(item["unit"], []).append(({**item, "condition": cond}, crops))
        if (n + 1) % 100 == 0:
            log(f"  eval pictures {n + 1}/{len(items)}")
    units = {s: sorted(u for u in per_unit if per_unit[u][0][0]["source"] == s) for s in
             sorted({i["source"] for i in items})}
    cost = {u: sum(len(c[0]) + 64 for _, crops in rows for c in crops) + 200 * len(rows) for u, rows in per_unit.items()}
    keep = {s: list(us) for s, us in units.items()}
    kept = {s: sum(cost[u] for u in us) for s, us in keep.items()}
    while sum(kept.values()) > max_bytes and any(keep.values()):
        s = max((s for s in keep if keep[s]), key=lambda s: kept[s])  # the source taking most room gives
        kept[s] -= cost[keep[s].pop()]
    pictures, blobs, boxes, lms, pic_of = [], [], [], [], []
    for s in sorted(keep):
        for u in keep[s]:
            for row, crops in per_unit[u]:
                pictures.append({k: row[k] for k in ("path", "label", "source", "family", "unit", "condition")}
                                | {"faces": len(crops)})
                for data, b, lm in crops:
                    blobs.append(data)
                    boxes.append(b)
                    lms.append(lm)
                    pic_of.append(len(pictures) - 1)
    arrays = {
        "eval_jpeg": np.frombuffer(b"".join(blobs), np.uint8),
        "eval_offsets": np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64),
        "eval_box": np.array(boxes, np.float32).reshape(-1, 4),
        "eval_landmarks": np.array(lms, np.float32).reshape(-1, 5, 2),
        "eval_picture": np.array(pic_of, np.int32),
    }
    return EvalPart(arrays, pictures, sum(a.nbytes for a in arrays.values()) + 150 * len(pictures),
                    {s: (len(keep[s]), len(units[s])) for s in units})


def baseline_scores(model_dir: str, eval_part: EvalPart, margin: float) -> dict:
    """An exported model (a models/ folder, ensembles too) on the packed eval faces, run here as the
    runtime runs it (detector.classifier: its crop size, every crop margin (`tta.margins` too) and
    alignment, its test-time flip and calibration), from the very pixels the device reads: P(fake)
    per face, for the device's table."""
    from detector.classifier import Classifier
    from detector.crops import crop_face
    from detector.manifest import load_manifest

    man = load_manifest(model_dir)
    if max(man.crop_margins) > margin:
        print(f"warning: {model_dir} crops at margins {list(man.crop_margins)}, the eval regions hold {margin}: "
              f"its wider crops get black edges")
    clf = Classifier(man, "cpu", threads=2)
    a = eval_part.arrays
    out: list[float] = []
    for lo in range(0, len(a["eval_picture"]), 64):
        hi = min(len(a["eval_picture"]), lo + 64)
        regions = [jpeg_decode(a["eval_jpeg"][a["eval_offsets"][i]:a["eval_offsets"][i + 1]]) for i in range(lo, hi)]
        crops = np.stack([np.stack([crop_face(r, a["eval_box"][i], a["eval_landmarks"][i], man.input.size, m,
                                              man.crop.align) for m in man.crop_margins])
                          for i, r in zip(range(lo, hi), regions)])  # (n, V, S, S, 3), as the pipeline gives it
        out += [round(float(p), 6) for p in clf(crops)]
    return {"name": man.name, "version": man.version, "model": str(model_dir), "size": man.input.size,
            "margins": list(man.crop_margins), "scores": out}


def eval_margins(asked: list[float] | None, baselines: list[str], margin: float) -> list[float]:
    """The crop margins the device scores each eval face at (a trained network's logit is their
    mean, with mirrors, as the runtime reads `tta.margins`): `asked`, or else the first baseline's
    (the shipped model's), so that the trained network and the model it must beat see the same
    views. None may exceed `margin`: the packed regions hold only what a crop at `margin` reads."""
    if asked:
        margins = list(dict.fromkeys([margin, *asked]))
    elif baselines:
        from detector.manifest import load_manifest

        margins = [m for m in load_manifest(baselines[0]).crop_margins if m <= margin] or [margin]
    else:
        margins = [margin]
    if max(margins) > margin:
        raise SystemExit(f"--eval-margins {margins}: the eval regions are packed for the run's crop margin {margin}, "
                         f"so no margin may exceed it")
    return margins


# --- the file --------------------------------------------------------------------------------

def _meta_array(meta: dict) -> np.ndarray:
    return np.frombuffer(json.dumps(meta).encode(), np.uint8)


def write_pack(path: Path, meta: dict, parts: dict[str, list[D.FaceRecord]], weights: dict[str, np.ndarray],
               eval_part: EvalPart | None, max_mib: float, margin: float, align: bool,
               side: int | None = None, quality: int | None = None, min_side: int = 0) -> dict:
    """Write the pack at the best (side, quality) of LADDER whose faces fit max_mib beside the
    weights and the evaluation set (or exactly --side/--quality; no side below min_side): the
    summary. SystemExit when nothing fits."""
    limit = int(max_mib * MIB)
    records = parts.get("train", []) + parts.get("val", [])
    if not records:
        raise SystemExit("no training or validation faces to pack")
    others = {**weights, **(eval_part.arrays if eval_part else {}),
              "meta": _meta_array({**meta, "eval_pictures": eval_part.pictures if eval_part else []})}
    fixed = zipped_size(others) + FACE_ARRAY_BYTES * len(records) + int(OVERHEAD_MIB * MIB)
    room = limit - fixed
    rungs = [r for r in LADDER if (side is None or r[0] == side) and (quality is None or r[1] == quality)
             and r[0] >= min_side]
    if side is not None and quality is not None and (side, quality) not in rungs:
        rungs = [(side, quality)]
    sample = [records[i] for i in np.random.default_rng(0).choice(len(records), min(120, len(records)), replace=False)]
    tried = []
    for s, q in rungs:
        est = estimate_faces(sample, s, q, margin, align, len(records))
        tried.append(f"{s} px q{q}: ~{est / MIB:.1f} MiB")
        if est > room * 1.02:
            continue
        faces = pack_faces(parts, s, q, margin, align)
        zbytes = len(zlib.compress(faces.arrays["face_jpeg"].tobytes(), 6))
        if zbytes > room:
            tried[-1] = f"{s} px q{q}: {zbytes / MIB:.1f} MiB"
            continue
        arrays = {**faces.arrays, **weights, **(eval_part.arrays if eval_part else {})}
        full = {**meta, "faces": {"side": s, "quality": q, "margin": margin, "align": align,
                                  "jitter": JITTER, "count": len(records),
                                  "train": len(parts.get("train", [])), "val": len(parts.get("val", [])),
                                  "mib": round(faces.nbytes / MIB, 2)},
                "eval_pictures": eval_part.pictures if eval_part else []}
        arrays["meta"] = _meta_array(full)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        size = tmp.stat().st_size
        if size > limit:  # the estimate of the fixed part was short: try the next rung
            tmp.unlink()
            tried[-1] = f"{s} px q{q}: file {size / MIB:.2f} MiB"
            continue
        tmp.replace(path)
        return {"path": str(path), "mib": round(size / MIB, 2), "side": s, "quality": q,
                "faces_mib": round(zbytes / MIB, 2), "tried": tried}
    wmib = zipped_size(weights) / MIB if weights else 0.0
    emib = zipped_size(eval_part.arrays) / MIB if eval_part else 0.0
    raise SystemExit(f"the pack cannot fit --max-mib {max_mib}: weights {wmib:.1f} MiB + evaluation set "
                     f"{emib:.1f} MiB leave {room / MIB:.1f} MiB for {len(records)} faces, and "
                     f"none of these fit ({'; '.join(tried)}). Raise --max-mib, leave the exported model out "
                     f"(--init-onnx none), lower --eval-mib, or pack fewer faces (--limit).")


# --- reading ---------------------------------------------------------------------------------

@dataclass
class Pack:
    """An opened pack: meta (dict), the arrays (np.load, lazily read)."""
    meta: dict
    z: object

    @property
    def eval_margins(self) -> list[float]:
        """The crop margins the device reads each eval face at (packs made before `--eval-margins`:
        the run's margin alone)."""
        return self.meta.get("eval", {}).get("margins", [float(self.meta["config"]["margin"])])

    def records(self, split: str, limit: int = 0, threads: int = 0) -> list[PackedFace]:
        """The packed faces of a split ("train" or "val"), in packing order; limit > 0: `limit` of
        them spread evenly over it (`spread`)."""
        z = self.z
        idx = np.flatnonzero(z["face_split"] == split)
        if limit:
            idx = idx[spread(len(idx), limit)]
        jpeg, off, geom = z["face_jpeg"], z["face_offsets"], z["face_geom"]
        box, lms, ident, src = z["face_box"], z["face_landmarks"], z["face_identity"], z["face_source"]
        frame, face = z["face_frame"], z["face_index"]
        size = int(self.meta["config"].get("cache_size", D.CACHE_SIZE))

        def one(i: int) -> PackedFace:
            n, x0, y0 = (int(v) for v in geom[i])
            canvas = unpack_canvas(jpeg[off[i]:off[i + 1]], n, x0, y0)
            return PackedFace(canvas, size, box[i], lms[i], str(ident[i]), str(src[i]), int(frame[i]), int(face[i]))

        if threads > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(threads) as ex:  # Pillow lets go of the GIL while it decodes
                return list(ex.map(one, idx.tolist()))
        return [one(i) for i in idx.tolist()]

    def weights(self, name: str) -> dict[str, np.ndarray]:
        """A packed state_dict ("imagenet" or "init") as float32 arrays ({} when not packed)."""
        p = name + "/"
        return {k[len(p):]: self.z[k].astype(np.float32) for k in self.z.files if k.startswith(p)}

    def eval_faces(self, limit: int = 0) -> tuple[list[dict], list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]]:
        """(pictures, faces): each face (picture index, region RGB, box, landmarks in it), in packing
        order; limit > 0 keeps the first `limit` pictures (and so a prefix of the faces)."""
        pictures = self.meta.get("eval_pictures", [])
        if "eval_jpeg" not in self.z.files:
            return [], []
        z = self.z
        jpeg, off, pic = z["eval_jpeg"], z["eval_offsets"], z["eval_picture"]
        box, lms = z["eval_box"], z["eval_landmarks"]
        n = len(pictures) if not limit else min(limit, len(pictures))
        faces = [(int(pic[i]), jpeg_decode(jpeg[off[i]:off[i + 1]]), box[i], lms[i])
                 for i in range(len(pic)) if pic[i] < n]
        return pictures[:n], faces


def spread(n: int, k: int) -> np.ndarray:
    """k indices of range(n) spread evenly over it (all of them when k >= n): a small sample that
    still holds many people (the corpus is in folder order, and a folder can be one person)."""
    return np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(int)) if n else np.zeros(0, int)


def part_sizes(path: str | Path) -> dict[str, float]:
    """MiB that each part takes in the file: face, eval, imagenet, init, meta."""
    import zipfile

    out: dict[str, float] = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            key = info.filename.split("/")[0] if "/" in info.filename else info.filename.split("_")[0].split(".")[0]
            out[key] = out.get(key, 0.0) + info.compress_size / MIB
    return {k: round(v, 2) for k, v in out.items()}


def load_pack(path: str | Path) -> Pack:
    z = np.load(path, allow_pickle=False)
    meta = json.loads(bytes(z["meta"]).decode())
    if meta.get("pack_version") != PACK_VERSION:
        raise SystemExit(f"{path}: pack version {meta.get('pack_version')}, this reader knows {PACK_VERSION}")
    return Pack(meta, z)


# --- command line ----------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m training.gpu_pack", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True,
                   help="training/runs/NAME, or a run's config.json (training/configs/ keeps the shipped models' "
                        "with repository-relative paths): it says the faces and splits")
    p.add_argument("--out", default="training/gpu_pack.npz")
    p.add_argument("--max-mib", type=float, default=26.0,
                   help="size limit of the file (MiB): the device takes 64 MiB with the ~37.5 MiB of tracked files")
    p.add_argument("--side", type=int, default=None, help="packed side of the cached square (default: the "
                   f"best that fits, of {sorted({s for s, _ in LADDER}, reverse=True)})")
    p.add_argument("--quality", type=int, default=None, help="JPEG quality of the faces (default: as --side)")
    p.add_argument("--backbone", default=None, help="ImageNet weights of this backbone (default: the run's)")
    p.add_argument("--init-onnx", default="auto",
                   help="also pack this exported model's weights (auto: the run's --init-onnx when the file is "
                        "here and the faces still fit at --init-min-side; none: never)")
    p.add_argument("--init-min-side", type=int, default=288,
                   help="with --init-onnx auto, the exported model is left out when the faces would be packed "
                        "smaller than this")
    p.add_argument("--eval-dir", default="/tmp/verity-shift", help="a training.shift_eval folder (none: no eval set)")
    p.add_argument("--eval-source", action="append", default=None,
                   help=f"source of the eval set (repeatable; default {', '.join(EVAL_SOURCES)})")
    p.add_argument("--eval-mib", type=float, default=3.0, help="room for the evaluation set (MiB)")
    p.add_argument("--eval-crop-px", type=int, default=288,
                   help="an eval face whose classifier crop is wider than this is stored shrunk to it")
    p.add_argument("--eval-quality", type=int, default=95)
    p.add_argument("--eval-margins", nargs="+", type=float, default=None,
                   help="crop margins the device scores each eval face at, beside the run's (default: the first "
                        "--baseline's crop.margin and tta.margins; none above the run's margin)")
    p.add_argument("--baseline", action="append", default=None,
                   help="exported model scored here on the eval faces, for the device's table (repeatable; "
                        f"default {SHIPPED.relative_to(SHIPPED.parents[1])}, the shipped model; none: no baseline)")
    p.add_argument("--limit", type=int, default=0, help="pack only N training and N validation faces (spread over them) and the first N eval pictures "
                        "per source (smoke tests)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    run = Path(args.run)
    cfg_path = run if run.is_file() else run / "config.json"
    if not cfg_path.exists():
        raise SystemExit(f"--run {run}: no config.json (give a run folder or a run's config.json, "
                         f"e.g. training/configs/verity-sbi-research.json)")
    cfg = json.loads(cfg_path.read_text())
    backbone = args.backbone or cfg["backbone"]
    margin, align = float(cfg["margin"]), bool(cfg["align"])
    parts, splits = D.load_split_records(cfg)
    parts = {k: ([v[i] for i in spread(len(v), args.limit)] if args.limit else v)
             for k, v in parts.items() if k in ("train", "val")}
    print(f"faces: train {len(parts['train'])} ({len({r.identity for r in parts['train']})} ids), "
          f"val {len(parts['val'])} ({len({r.identity for r in parts['val']})} ids); test people left behind")

    weights = imagenet_weights(backbone)
    meta = {"pack_version": PACK_VERSION, "run": str(run), "config": cfg, "backbone": backbone,
            "splits_counts": splits.get("counts"), "command": "python -m training.gpu_pack " + " ".join(
                sys.argv[1:] if argv is None else argv), "weights": {"imagenet": {"backbone": backbone}}}
    init = cfg.get("init_onnx") if args.init_onnx == "auto" else (None if args.init_onnx == "none" else args.init_onnx)
    init_w = {}
    if init and Path(init).exists():
        man_path = Path(init).with_name("model.json")
        man = json.loads(man_path.read_text()) if man_path.exists() else {}
        init_size = int(man.get("input", {}).get("size", cfg["size"]))
        init_w = onnx_weights(backbone, init, float(cfg.get("drop_rate", 0.0)), init_size)
        meta["weights"]["init"] = {"onnx": str(Path(init).resolve()), "name": man.get("name"),
                                   "version": man.get("version"), "size": init_size, "freeze_bn": True}
    elif init and args.init_onnx != "auto":
        raise SystemExit(f"--init-onnx {init}: not found")

    eval_part = None
    if args.eval_dir and args.eval_dir != "none":
        folder = Path(args.eval_dir)
        items = eval_items(folder, tuple(args.eval_source or EVAL_SOURCES))
        if args.limit:
            items = [i for s in sorted({i["source"] for i in items})
                     for i in [j for j in items if j["source"] == s][:args.limit]]
        print(f"eval set: {len(items)} single pictures of {', '.join(args.eval_source or EVAL_SOURCES)} "
              f"under {', '.join(EVAL_CONDITIONS)}")
        eval_part = pack_eval(folder, items, margin, align, args.eval_crop_px, args.eval_quality,
                              int(args.eval_mib * MIB))
        baselines = [b for b in (args.baseline or [str(SHIPPED)]) if b != "none"]
        meta["eval"] = {"dir": str(folder), "conditions": list(EVAL_CONDITIONS), "crop_px": args.eval_crop_px,
                        "quality": args.eval_quality, "people": eval_part.people,
                        "margins": eval_margins(args.eval_margins, baselines, margin)}
        print(f"eval crops at margins {meta['eval']['margins']}, each with its mirror")
        meta["eval_baselines"] = [baseline_scores(b, eval_part, margin) for b in baselines]
        for b in meta["eval_baselines"]:
            print(f"baseline {b['name']} {b['version']} scored on the {len(b['scores'])} eval faces")

    def attempt(with_init: bool, min_side: int = 0) -> dict:
        w = {**weights, **(init_w if with_init else {})}
        m = dict(meta, weights={k: v for k, v in meta["weights"].items() if with_init or k != "init"})
        return write_pack(Path(args.out), m, parts, w, eval_part, args.max_mib, margin, align, args.side,
                          args.quality, min_side)

    if init_w and args.init_onnx == "auto":
        try:
            summary = attempt(True, args.init_min_side)
        except SystemExit:
            print(f"the exported model {init} left out: with it the faces would be smaller than "
                  f"{args.init_min_side} px (--init-onnx {init} forces it)")
            summary = attempt(False)
    else:
        summary = attempt(bool(init_w))

    pk = load_pack(summary["path"])
    mib = part_sizes(summary["path"])
    print(json.dumps({
        "file": summary["path"], "mib": summary["mib"], "max_mib": args.max_mib,
        "faces": {"train": len(parts["train"]), "val": len(parts["val"]), "side": summary["side"],
                  "quality": summary["quality"], "mib": mib.get("face", 0.0)},
        "weights_mib": {k: mib[k] for k in ("imagenet", "init") if k in mib},
        "init": pk.meta["weights"].get("init"),
        "eval": None if eval_part is None else {
            "pictures": len(eval_part.pictures), "faces": len(eval_part.arrays["eval_picture"]),
            "people": eval_part.people, "mib": mib.get("eval", 0.0)},
        "tried": summary["tried"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
