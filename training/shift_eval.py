"""The source-held-out evaluation: how a model does on pictures from sources it never trained on.

    python -m training.shift_eval --out /tmp/verity-shift                          # build the sets
    python -m training.shift_eval --out /tmp/verity-shift --evaluate models/verity-sbi [MODEL ...]

A model's held-out *people* come from the sources it trained on (same cameras, light, ages,
compression), and its score there overstates what a platform sees (0.88 there was 0.70 on new
sources). This evaluation is built per *source* (a folder of ../shared/data), and a model's
`model.json` says which folders it trained on (`data_licence.sources`): the report marks each
source "seen" or "held out" for each model, and the figure models are chosen on is the one over
the sources that every compared model held out whole.

Per source, the test people of the identity splits (`training.data.split_of`, seed 0: the seed
of training/splits/verity-sbi.json, so a source a model did train on still contributes only
people it did not train on) and up to `--per-source` of them, one photo each. From each:

real     the photo as is;
sbi      a Self-Blended Image (training.sbi, the training manipulation itself);
swap     another test person of the same source swapped in (training.faceswap: LAB colour
         transfer, feathered ellipse);
poisson  the same swap cloned in the gradient domain (seamless, no colour seam);
lowres   a face re-rendered at 1/1.8-1/3.5 of the picture's resolution, smoothed, softly pasted
         with colour drift (faceswap.rerender_face): half are another person (a live face swap),
         half the same person re-rendered (reenactment).

and the same people again in *group* pictures: four photos of a source side by side on one
canvas, each scaled so that its face is 45-110 px across (small faces, several people in one
picture). The fake group is the real group with one person replaced by its fake (the family
rotates), so real and fake groups differ only in that face. Each group picture is also placed,
as it is, in the middle of a 4000 x 2250 *wide* frame with a faceless backdrop: a phone's group
photo, whose 45-110 px faces the face detector only finds if it does not shrink the frame to a
few hundred pixels first.

Every file is written as JPEG quality 95 (real and fake share one compression history), and
each is scored under the conditions of `verity eval` (as is, JPEG 50, half size) with the
runtime detector, whole picture: it finds the faces itself.

Intervals are 95% bootstrap intervals that resample *people* (a person's real photo and its
fakes go together), and the difference between two models is a paired bootstrap on the same
resamples.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from detector import evaluation as ev

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
SAVE_QUALITY = 95
SEED = 20261206
SPLIT_SEED = 0
"""training/splits/verity-sbi.json's seed: `split_of(identity, 0) == "test"` are its test people."""
SOURCES = ("faces-lfw", "faces-utk", "talking-faces", "faces-fairface", "faces-london", "faces-canada")
"""Folders of ../shared/data, each one source."""
FAMILIES = ("sbi", "swap", "poisson", "lowres")
LAYOUTS = ("single", "group", "wide")
WIDE = (4000, 2250)
"""The wide frame a group picture is placed in (width, height): a 9-megapixel phone photo."""
MIN_FACE = 40
"""A photo whose largest face is narrower than this is not used (no fake can be made of it)."""
TALKING_FRAMES = 4
"""Stills taken from each talking-faces clip (one person per clip)."""
GROUP_SIZE = 4
ONE_FILE_PER_PERSON = ("faces-utk", "faces-fairface")
"""Sources without identity labels: every file is one person."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def save_jpeg(rgb: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, "JPEG", quality=SAVE_QUALITY)


# --- people ----------------------------------------------------------------------------------

def source_people(data: Path, source: str, per_source: int, split: str = "test") -> list[tuple[str, str, np.ndarray]]:
    """(person, name, RGB) for up to per_source people of a source in `split` (test: what the
    evaluation scores; val: the validation people that fit a model's picture calibration), one
    picture each (talking-faces: every clip is a person, TALKING_FRAMES stills of it, all kept)."""
    from training import data as D

    root = data / source
    rng = np.random.default_rng([SEED, SOURCES.index(source) if source in SOURCES else 99])
    if source == "talking-faces":
        if split != "test":
            raise ValueError("talking-faces has no validation people: each clip is a test person")
        out = []
        for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in D.VIDEO_EXT):
            person = f"{source}/{path.relative_to(root).with_suffix('').as_posix()}"
            for idx, rgb in D.video_frames(path, TALKING_FRAMES):
                out.append((person, f"{person.replace('/', '__')}__f{idx:04d}", rgb))
        return out
    by_person: dict[str, Path] = {}
    for _root, path in D.scan([root]):
        if path.suffix.lower() not in D.IMAGE_EXT:
            continue
        # Test people by the training's own identity rule (what a model held out); one photo per
        # person, a person being a file where the folder has no identities (UTKFace: the
        # training rule reads its leading age as an identity, so the split is by age there).
        if D.split_of(D.identity_of(root, path), SPLIT_SEED) == split:
            person = D.identity_of(root, path, "file") if source in ONE_FILE_PER_PERSON else D.identity_of(root, path)
            by_person.setdefault(person, path)  # the first photo of the person, sorted
    people = sorted(by_person)
    rng.shuffle(people)
    return [(p, by_person[p].relative_to(data).with_suffix("").as_posix().replace("/", "__"),
             D.load_image(by_person[p])) for p in people[:per_source]]


def make_fakes(photos: list[dict], rng_seed: int) -> None:
    """Adds photo["fakes"][family] for every photo (the donor: the next person of the list)."""
    from training import faceswap, sbi

    n = len(photos)
    for i, ph in enumerate(photos):
        rng = np.random.default_rng([rng_seed, i])
        donor = next((photos[(i + k) % n] for k in range(1, n) if photos[(i + k) % n]["person"] != ph["person"]),
                     None)
        f = ph["face"]
        fakes = {"sbi": sbi.self_blend(ph["rgb"], f.box, f.landmarks, rng)[0]}
        if donor is not None:
            d = donor["face"]
            fakes["swap"] = faceswap.swap_face(donor["rgb"], d.landmarks, ph["rgb"], f.landmarks)
            fakes["poisson"] = faceswap.poisson_swap_face(donor["rgb"], d.landmarks, ph["rgb"], f.landmarks)
        same = donor is None or i % 2 == 1
        src, src_lm = (ph["rgb"], f.landmarks) if same else (donor["rgb"], donor["face"].landmarks)
        drift = tuple(float(v) for v in rng.normal(0, (3.0, 2.0, 2.0)))
        fakes["lowres"] = faceswap.rerender_face(src, src_lm, ph["rgb"], f.landmarks,
                                                 factor=float(rng.uniform(1.8, 3.5)), drift=drift,
                                                 smooth=float(rng.uniform(0.4, 1.0)))
        ph["fakes"] = fakes


def group_picture(tiles: list[np.ndarray], widths: list[float], face_px: list[int],
                  background: tuple[int, int, int]) -> np.ndarray:
    """Tiles side by side, each scaled so that its face is face_px wide, bottoms aligned."""
    scaled = []
    for t, fw, px in zip(tiles, widths, face_px):
        s = px / max(fw, 1.0)
        h, w = t.shape[:2]
        scaled.append(np.asarray(Image.fromarray(t).resize((max(8, round(w * s)), max(8, round(h * s))),
                                                           Image.BICUBIC if s > 1 else Image.LANCZOS)))
    gap = 12
    height = max(s.shape[0] for s in scaled) + 2 * gap
    width = sum(s.shape[1] for s in scaled) + gap * (len(scaled) + 1)
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = background
    x = gap
    for s in scaled:
        canvas[height - gap - s.shape[0]:height - gap, x:x + s.shape[1]] = s
        x += s.shape[1] + gap
    return canvas


def wide_frame(picture: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`picture` in the middle of a WIDE frame whose backdrop is smooth colour noise (no face)."""
    w, h = WIDE
    small = rng.integers(0, 256, size=(h // 64, w // 64, 3), dtype=np.uint8)
    frame = np.array(Image.fromarray(small).resize((w, h), Image.BICUBIC))
    ph, pw = picture.shape[:2]
    y, x = (h - ph) // 2, (w - pw) // 2
    frame[y:y + ph, x:x + pw] = picture
    return frame


# --- building ----------------------------------------------------------------------------------

def build(out: Path, data: Path, per_source: int, sources: list[str], split: str = "test") -> Path:
    from detector.faces import FaceDetector, retinaface_onnx_bytes
    from detector.runtime import make_session
    from training import faceswap

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    session, _ = make_session(retinaface_onnx_bytes(), "cpu")
    fd = FaceDetector(session)
    rows: list[dict] = []

    def add(rel: str, label: int, source: str, family: str, layout: str, unit: str) -> None:
        rows.append({"path": rel, "label": label, "source": source, "family": family, "layout": layout,
                     "unit": unit})

    for si, source in enumerate(sources):
        if not (data / source).is_dir():
            log(f"{source}: not in {data}, left out")
            continue
        photos = []
        for person, name, rgb in source_people(data, source, per_source, split):
            face = faceswap.largest_face(fd, rgb)
            if face is None or face.width < MIN_FACE:
                continue
            photos.append({"person": person, "name": name, "rgb": rgb, "face": face})
        make_fakes(photos, SEED + si)
        for ph in photos:
            rel = f"{source}/single/real/{ph['name']}.jpg"
            save_jpeg(ph["rgb"], out / rel)
            add(rel, ev.REAL, source, "real", "single", ph["person"])
            for fam, img in ph["fakes"].items():
                rel = f"{source}/single/{fam}/{ph['name']}.jpg"
                save_jpeg(img, out / rel)
                add(rel, ev.FAKE, source, fam, "single", ph["person"])
        rng = np.random.default_rng([SEED, si, 1])
        order = rng.permutation(len(photos))
        for g in range(len(photos) // GROUP_SIZE):
            members = [photos[int(j)] for j in order[g * GROUP_SIZE:(g + 1) * GROUP_SIZE]]
            widths = [float(m["face"].width) for m in members]
            face_px = [int(v) for v in rng.integers(45, 111, size=len(members))]
            bg = tuple(int(v) for v in rng.integers(40, 220, size=3))
            unit = f"{source}/group{g:03d}"
            real = group_picture([m["rgb"] for m in members], widths, face_px, bg)
            backdrop = [SEED, si, 2, g]  # its own stream: the group pictures stay as they were
            for layout, img in (("group", real), ("wide", wide_frame(real, np.random.default_rng(backdrop)))):
                rel = f"{source}/{layout}/real/g{g:03d}.jpg"
                save_jpeg(img, out / rel)
                add(rel, ev.REAL, source, "real", layout, unit)
            fam = FAMILIES[g % len(FAMILIES)]
            k = int(rng.integers(0, len(members)))
            if fam not in members[k]["fakes"]:
                fam = "sbi"
            tiles = [m["rgb"] for m in members]
            tiles[k] = members[k]["fakes"][fam]
            fake = group_picture(tiles, widths, face_px, bg)
            for layout, img in (("group", fake), ("wide", wide_frame(fake, np.random.default_rng(backdrop)))):
                rel = f"{source}/{layout}/{fam}/g{g:03d}.jpg"
                save_jpeg(img, out / rel)
                add(rel, ev.FAKE, source, fam, layout, unit)
        log(f"{source}: {len(photos)} photos of {len({ph['person'] for ph in photos})} people, {len(photos) // GROUP_SIZE} group pictures "
            f"({time.perf_counter() - t0:.0f} s)")
    (out / "items.json").write_text(json.dumps({"built": datetime.date.today().isoformat(), "seed": SEED,
                                                "split": split, "items": rows}, indent=0))
    with open(out / "eval.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "condition", "group"])
        for r in rows:
            w.writerow([r["path"], "fake" if r["label"] else "real", "", f"{r['source']}:{r['layout']}:{r['family']}"])
    log(f"wrote {len(rows)} items to {out} ({time.perf_counter() - t0:.0f} s)")
    return out


# --- scoring ---------------------------------------------------------------------------------

def trained_folders(manifest: dict) -> list[str]:
    """The --real folders a model trained on: model.json's data_licence, or for a model exported
    before it had one, the folder names of training.data ("faces-london (CC BY 4.0)", members too)."""
    lic = manifest.get("data_licence")
    if lic:
        return sorted(s["folder"] for s in lic.get("sources", []))
    tr = manifest.get("training", {})
    entries = list(tr.get("data", [])) + [d for m in tr.get("members", []) for d in m.get("data", [])]
    return sorted({e.split(" ")[0] for e in entries if e.startswith(("faces-", "talking-"))})


def runtime_key(manifest: dict, picture: bool = True) -> dict:
    """What a cached score depends on besides the pictures: the network and how the runtime
    crops, augments and (for a picture's score, `picture`) aggregates for it. A picture's score
    never depends on the views of a video frame (`tta.video`)."""
    key = {k: manifest.get(k) for k in ("sha256", "crop", "tta", "calibration", *(("picture",) if picture else ()))}
    if picture and isinstance(key["tta"], dict):
        key["tta"] = {k: v for k, v in key["tta"].items() if k != "video"}
    return key


def score(out: Path, model: str, conditions: list[str]) -> dict:
    """Scores of every item under every condition with the model (cached in scores-NAME-VERSION.json)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from detector.pipeline import Detector

    det = Detector(model=model, device="cpu")
    cache = out / f"scores-{det.model_name}-{det.model_version}.json"
    manifest = json.loads((Path(model) / "model.json").read_text())
    trained_on = trained_folders(manifest)
    if cache.exists():
        saved = json.loads(cache.read_text())
        if saved.get("conditions") == conditions and saved.get("runtime") == runtime_key(manifest) and "faces" in saved:
            return saved
    det.warmup()
    items = ev.items_from_csv(out / "eval.csv")
    jobs = ev.plan(items, conditions)
    scores: dict[str, dict[str, float | None]] = defaultdict(dict)
    faces: dict[str, dict[str, list]] = defaultdict(dict)
    t0 = time.perf_counter()
    with Progress(TextColumn(f"{det.model_name} {det.model_version}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn()) as bar:
        task = bar.add_task("score", total=len(jobs))
        for item, cond in jobs:
            o = ev.evaluate_item(det, item, cond)
            key = str(item.path.relative_to(out))
            scores[key][cond] = o.score if o.status == ev.SCORED else None
            faces[key][cond] = o.extra.get("faces", [])
            bar.advance(task)
    saved = {"model": det.model_name, "version": det.model_version, "sha256": manifest.get("sha256"),
             "runtime": runtime_key(manifest),
             "licence": (manifest.get("data_licence") or {}).get("use", "unknown"), "trained_on": trained_on,
             "picture": manifest.get("picture"), "conditions": conditions,
             "seconds": round(time.perf_counter() - t0, 1), "scores": scores, "faces": faces}
    cache.write_text(json.dumps(saved))
    return saved


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    return ev.roc_auc(y, s) if 0 < y.sum() < len(y) else float("nan")


class Table:
    """Items of one report cell: labels, a model's scores and the bootstrap unit of each."""

    def __init__(self, rows: list[dict], runs: list[dict], cond: str) -> None:
        keep = [r for r in rows if all(run["scores"].get(r["path"], {}).get(cond) is not None for run in runs)]
        self.rows = keep
        self.y = np.array([r["label"] for r in keep])
        self.s = [np.array([run["scores"][r["path"]][cond] for r in keep], dtype=np.float64) for run in runs]
        units = sorted({r["unit"] for r in keep})
        index = {u: i for i, u in enumerate(units)}
        self.unit = np.array([index[r["unit"]] for r in keep], dtype=np.int64)
        self.n_units = len(units)
        self.dropped = len(rows) - len(keep)

    def aucs(self) -> list[float]:
        return [_auc(self.y, s) for s in self.s]

    def boot(self, resamples: int, seed: int = 0) -> np.ndarray:
        return people_bootstrap(self.y, self.s, self.unit, resamples, seed)


def people_bootstrap(y: np.ndarray, scores: list[np.ndarray], unit: np.ndarray, resamples: int,
                     seed: int = 0) -> np.ndarray:
    """(resamples, models) ROC-AUCs over people drawn with replacement, the same draws for every
    model (`unit`: each item's person; a person's real photo and its fakes go together). A draw
    with one class only is nan."""
    units = np.unique(unit)
    members = [np.flatnonzero(unit == u) for u in units]
    rng = np.random.default_rng(seed)
    out = np.full((resamples, len(scores)), np.nan)
    for b in range(resamples):
        idx = np.concatenate([members[k] for k in rng.integers(0, len(units), len(units))])
        if 0 < y[idx].sum() < len(idx):
            out[b] = [ev.roc_auc(y[idx], s[idx]) for s in scores]
    return out


def ci_text(a: np.ndarray) -> str:
    """" [low, high]" of the finite values' 95% percentile interval ("" when there are none)."""
    a = a[np.isfinite(a)]
    if not len(a):
        return ""
    lo, hi = np.percentile(a, [2.5, 97.5])
    return f" [{lo:.3f}, {hi:.3f}]"


def report(out: Path, runs: list[dict], conditions: list[str], resamples: int) -> str:
    rows = json.loads((out / "items.json").read_text())["items"]
    sources = [s for s in SOURCES if any(r["source"] == s for r in rows)]
    names = [f"{r['model']} {r['version']}" for r in runs]
    held_all = [s for s in sources if all(s not in run["trained_on"] for run in runs)]
    lines = [(f"Source-held-out evaluation (`python -m training.shift_eval --out {out} --evaluate ...`), "
              f"{datetime.date.today().isoformat()}, {len(rows)} files x {', '.join(conditions)}; "
              f"{resamples} bootstrap resamples of people."), ""]
    for run, name in zip(runs, names):
        lines.append(f"- **{name}** ({run['licence']}): trained on {', '.join(run['trained_on']) or 'unknown'}; "
                     f"scoring took {run['seconds']:.0f} s.")
    lines += ["", f"Held out by every model here: {', '.join(held_all) or 'none'}.", ""]

    def cell(sel: list[dict], cond: str, diff: bool) -> list[str]:
        t = Table(sel, runs, cond)
        if t.n_units < 2 or not 0 < t.y.sum() < len(t.y):
            return ["–"] * (len(runs) + (1 if diff else 0))
        b = t.boot(resamples)
        cells = [f"{a:.3f}{ci_text(b[:, i])}" for i, a in enumerate(t.aucs())]
        if diff:
            d = t.aucs()[-1] - t.aucs()[0]
            cells.append(f"{d:+.3f}{ci_text(b[:, -1] - b[:, 0])}")
        return cells

    diff = len(runs) > 1
    head = ["set", "condition", "real", "fake"] + names + ([f"{names[-1]} − {names[0]}"] if diff else [])
    lines += ["### Whole pictures, every fake family (ROC-AUC [95% interval])", "",
              "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    blocks = [(f"**held out by all** ({', '.join(held_all)})", [r for r in rows if r["source"] in held_all])]
    blocks += [(s + " (" + ", ".join("seen" if s in run["trained_on"] else "held out" for run in runs) + ")",
                [r for r in rows if r["source"] == s]) for s in sources]
    for title, sel in blocks:
        if not sel:
            continue
        for cond in conditions:
            n_real = sum(1 for r in sel if r["label"] == 0)
            lines.append("| " + " | ".join([title, cond, str(n_real), str(len(sel) - n_real)]
                                           + cell(sel, cond, diff)) + " |")
    pool = [r for r in rows if r["source"] in held_all] or rows
    lines += ["", "### Held out by all: by fake family and layout (real of the same layout against that family)", "",
              "| family | layout | condition | " + " | ".join(names) + " |", "|" + "---|" * (3 + len(names))]
    for fam in FAMILIES:
        for layout in LAYOUTS:
            sel = [r for r in pool if r["layout"] == layout and r["family"] in ("real", fam)]
            if not any(r["family"] == fam for r in sel):
                continue
            for cond in conditions:
                t = Table(sel, runs, cond)
                lines.append(f"| {fam} | {layout} | {cond} | " + " | ".join(
                    "–" if not np.isfinite(a) else f"{a:.3f}" for a in t.aucs()) + " |")
    lines += ["", "### Held out by all: true-positive rate at 5% false positives, and at each model's review threshold", "",
              "| condition | " + " | ".join(f"{n}: TPR@5%FPR | {n}: flagged fake / real at review" for n in names) + " |",
              "|" + "---|" * (1 + 2 * len(names))]
    for cond in conditions:
        t = Table(pool, runs, cond)
        cells = []
        for run, s in zip(runs, t.s):
            thr = run.get("review")
            tpr = ev.tpr_at_fpr(t.y, s) if 0 < t.y.sum() < len(t.y) else float("nan")
            if thr is None:
                flagged = "–"
            else:
                flagged = f"{(s[t.y == 1] >= thr).mean():.1%} / {(s[t.y == 0] >= thr).mean():.1%}"
            cells += [f"{tpr:.3f}", flagged]
        lines.append(f"| {cond} | " + " | ".join(cells) + " |")
    lines += ["", ("### Held out by all: pictures at or above each model's review threshold, by layout "
              "(real / fake; a group holds four people, one of them faked in a fake group)"), "",
              "| layout | condition | " + " | ".join(names) + " |", "|" + "---|" * (2 + len(names))]
    for layout in LAYOUTS:
        sel = [r for r in pool if r["layout"] == layout]
        for cond in conditions:
            t = Table(sel, runs, cond)
            if not len(t.y):
                continue
            cells = []
            for run, s in zip(runs, t.s):
                thr = run.get("review")
                cells.append("–" if thr is None else
                             f"{(s[t.y == 0] >= thr).mean():.1%} / {(s[t.y == 1] >= thr).mean():.1%}")
            lines.append(f"| {layout} | {cond} | " + " | ".join(cells) + " |")
    no_face = {cond: [Table(rows, [run], cond).dropped for run in runs] for cond in conditions}
    lines += ["", "Files where no face was found are left out of every metric (a cell compares the files every "
              "model scored): " + "; ".join(f"{c}: " + ", ".join(f"{n} {d}" for n, d in zip(names, v))
                                           for c, v in no_face.items()) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.shift_eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder of the sets (built when it has no items.json)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="the ../shared/data folder")
    p.add_argument("--per-source", type=int, default=100, help="test people per source (default 100, as the model cards report)")
    p.add_argument("--source", action="append", choices=SOURCES, help="only these sources (repeatable)")
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="whose pictures: the test people (the evaluation, default) or the validation "
                        "people (what training.picture_calibration fits on; never the test people)")
    p.add_argument("--evaluate", nargs="+", metavar="MODEL",
                   help="model folders to score and compare (the first is the baseline of the difference)")
    p.add_argument("--conditions", nargs="+", default=list(ev.CONDITIONS), choices=ev.CONDITIONS)
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--report", help="also write the markdown report to this file")
    args = p.parse_args(argv)
    out = Path(args.out)
    if not (out / "items.json").exists():
        build(out, Path(args.data), args.per_source, args.source or list(SOURCES), args.split)
    if not args.evaluate:
        return
    runs = []
    for model in args.evaluate:
        run = score(out, model, args.conditions)
        run["review"] = json.loads((Path(model) / "model.json").read_text())["thresholds"]["review"]
        runs.append(run)
    text = report(out, runs, args.conditions, args.resamples)
    print(text)
    if args.report:
        Path(args.report).write_text(text)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
