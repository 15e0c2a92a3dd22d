"""Build the occlusion corpus: real talking faces with a hand passing in front of (or beside) the
face, and their face-swap fakes pasted over the hand as tools without occlusion masks do.

For every clip in ../shared/data/talking-faces (grid/ CC BY 4.0, video-retalking/ research use),
capped to --seconds and downscaled to at most --max-side px, and for each seed:

    real-none         the clip itself (re-encoded like the others; written once per clip)
    real-across       a hand passes across the face (40-90% of the face box at its peak)
    real-beside       a hand passes near the face, at most ~10% of the box (a hard negative)
    fake-paste-across     the donor's face pasted on every frame, over the hand
    fake-flicker-across   the same, but the tool loses the face while the hand hides > ~half of it
    fake-lowres-across    the swap made in a 128-256 px aligned crop, scaled up, pasted softly
    fake-paste-none       the swap without any occluder

The donor is another clip of the same folder (cross-identity; which one depends on the seed).
Writes H.264 MP4s (crf --crf), corpus.csv (one row per clip), coverage.json (ground-truth
coverage of the face box per frame, by path), contact sheets of the peak frames in sheets/ and,
with --y4m, 640x480 Chromium fake-camera files in y4m/.

    python bench/occlusion_corpus.py [--out /tmp/verity-occlusion] [--seeds 2] [--jobs 1]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import occlusionclips as oc

FOLDERS = ("grid", "video-retalking")
COLUMNS = ["path", "label", "family", "occluder", "source_clip", "source_folder", "licence", "seed",
           "peak_coverage", "peak_frame", "path_detail", "t_start", "duration", "donor_clip", "frames",
           "fps", "width", "height"]

try:
    from tqdm import tqdm
except ImportError:  # tqdm ships with the [train] extra only
    class tqdm:
        def __init__(self, total=None, desc="", unit="it", **_):
            self.total, self.n, self.desc, self.t0 = total, 0, desc, time.time()

        def update(self, k=1):
            self.n += k
            el = time.time() - self.t0
            eta = el / self.n * (self.total - self.n) if self.n and self.total else 0
            print(f"\r{self.desc}: {self.n}/{self.total} [{el:.0f}s<{eta:.0f}s]", end="", file=sys.stderr,
                  flush=True)

        def set_postfix_str(self, s):
            pass

        def close(self):
            print(file=sys.stderr)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()


def clips(folders, limit: int | None = None) -> list[Path]:
    out = []
    for folder in folders:
        found = sorted(p for p in (oc.TALKING_FACES / folder).iterdir() if p.suffix in (".mpg", ".mp4"))
        out += found[:limit] if limit else found
    return out


def donor_for(clip: Path, seed: int) -> Path:
    """Another clip of the same folder: the (1 + seed)-th after this one, cycling."""
    same = sorted(p for p in clip.parent.iterdir() if p.suffix == clip.suffix)
    i = same.index(clip)
    k = 1 + seed % (len(same) - 1)
    return same[(i + k) % len(same)]


def contact_sheet(rows: list[tuple[str, list[np.ndarray]]], path: Path, height: int = 240) -> Path:
    """A PNG: one row per (label, frames), frames scaled to `height`, the label written on the left."""
    import cv2
    from PIL import Image

    lines = []
    for label, frames in rows:
        tiles = []
        for f in frames:
            s = height / f.shape[0]
            tiles.append(cv2.resize(f, (round(f.shape[1] * s), height), interpolation=cv2.INTER_AREA))
        strip = np.concatenate(tiles, 1)
        tag = np.full((height, 170, 3), 255, np.uint8)
        for k, word in enumerate(label.split("\n")):
            cv2.putText(tag, word, (6, 24 + 22 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
        lines.append(np.concatenate([tag, strip], 1))
    width = max(x.shape[1] for x in lines)
    lines = [np.pad(x, ((0, 4), (0, width - x.shape[1]), (0, 0)), constant_values=255) for x in lines]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(lines, 0)).save(path)
    return path


def build_clip(clip: Path, seeds: list[int], out: Path, args, sheet: bool) -> tuple[list[dict], dict, float]:
    """All variants of one clip; returns (csv rows, coverage by path, seconds)."""
    t = time.time()
    fd = oc.make_face_detector(threads=1)
    folder = clip.parent.name
    frames, fps = oc.read_frames(clip, args.seconds, args.max_side)
    track = oc.track_faces(frames, fd)
    h, w = frames[0].shape[:2]
    stem = f"{folder}-{clip.stem}"
    rows, coverage = [], {}

    def write(name, frs, label, family, occluder, seed, occ=None, donor=""):
        rel = f"{label}/{stem}-{name}.mp4"
        (out / label).mkdir(parents=True, exist_ok=True)
        oc.write_mp4(frs, fps, out / rel, crf=args.crf)
        cov = occ.coverage if occ is not None else np.zeros(len(frs))
        coverage[rel] = [round(float(c), 4) for c in cov]
        rows.append({
            "path": rel, "label": label, "family": family, "occluder": occluder,
            "source_clip": clip.name, "source_folder": folder, "licence": oc.LICENCES[folder],
            "seed": seed, "peak_coverage": round(float(cov.max()), 4),
            "peak_frame": int(np.argmax(cov)) if occ is not None else "",
            "path_detail": occ.plan["path"] if occ is not None else "",
            "t_start": round(occ.plan["t_start"], 3) if occ is not None else "",
            "duration": round(occ.plan["duration"], 3) if occ is not None else "",
            "donor_clip": donor, "frames": len(frs), "fps": round(float(fps), 3), "width": w, "height": h})

    write("real-none", frames, "real", "real", "none", "")
    for seed in seeds:
        rng = np.random.default_rng([seed, sum(map(ord, stem))])
        across = oc.occlude(frames, "across", rng, fps=float(fps), track=track)
        beside = oc.occlude(frames, "beside", rng, fps=float(fps), track=track)
        write(f"s{seed}-real-across", across.frames, "real", "real", "across", seed, across)
        write(f"s{seed}-real-beside", beside.frames, "real", "real", "beside", seed, beside)
        donor = donor_for(clip, seed)
        dimgs, dlms = oc.donor_from_clip(donor, fd, args.seconds, args.max_side)
        dname = f"{folder}/{donor.name}"
        fakes = {}
        for recipe in ("paste", "flicker", "lowres"):
            fakes[recipe] = oc.fake_over_occluder(frames, across.frames, dimgs, dlms, fd, rng, recipe,
                                                  track=track, coverage=across.coverage)
            write(f"s{seed}-fake-{recipe}-across", fakes[recipe], "fake", recipe, "across", seed, across, dname)
        clean_fake = oc.fake_over_occluder(frames, frames, dimgs, dlms, fd, rng, "paste", track=track)
        write(f"s{seed}-fake-paste-none", clean_fake, "fake", "paste", "none", seed, None, dname)
        if sheet and seed == seeds[0] and args.y4m:             # Chromium fake-camera files
            (out / "y4m").mkdir(parents=True, exist_ok=True)
            oc.write_y4m(across.frames, fps, out / "y4m" / f"{stem}-s{seed}-real-across.y4m", size=(640, 480))
            oc.write_y4m(fakes["paste"], fps, out / "y4m" / f"{stem}-s{seed}-fake-paste-across.y4m", size=(640, 480))
        if sheet and seed == seeds[0]:
            p = across.peak
            picks = [max(0, p - 6), max(0, p - 3), p, min(len(frames) - 1, p + 3)]
            m = beside.middle
            contact_sheet([
                ("clean", [frames[i] for i in picks]),
                (f"real-across\npeak {across.peak_coverage:.2f}", [across.frames[i] for i in picks]),
                ("fake-paste", [fakes["paste"][i] for i in picks]),
                ("fake-flicker", [fakes["flicker"][i] for i in picks]),
                ("fake-lowres", [fakes["lowres"][i] for i in picks]),
                (f"real-beside\n({beside.plan['path']})", [beside.frames[i] for i in (m - 4, m - 2, m, m + 2)
                                                           if 0 <= i < len(frames)]),
                ("fake-paste-none", [clean_fake[i] for i in picks]),
            ], out / "sheets" / f"{stem}-s{seed}.png")
    return rows, coverage, time.time() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/verity-occlusion"))
    ap.add_argument("--seeds", type=int, default=2, help="random seeds per clip (0..N-1)")
    ap.add_argument("--seconds", type=float, default=4.0, help="cap each clip to this many seconds")
    ap.add_argument("--max-side", type=int, default=640, help="downscale clips to at most this (px)")
    ap.add_argument("--folders", nargs="+", default=list(FOLDERS), choices=FOLDERS)
    ap.add_argument("--limit", type=int, default=None, help="at most this many clips per folder")
    ap.add_argument("--crf", type=int, default=23)
    ap.add_argument("--sheets", type=int, default=2, help="contact sheets for this many clips per folder")
    ap.add_argument("--y4m", action="store_true",
                    help="also write 640x480 YUV4MPEG2 (Chromium fake camera) of real-across and "
                         "fake-paste-across for the contact-sheet clips, in y4m/")
    ap.add_argument("--jobs", type=int, default=1, help="clips built in parallel (processes)")
    args = ap.parse_args(argv)

    import cv2
    cv2.setNumThreads(1)
    todo = clips(args.folders, args.limit)
    if not todo:
        sys.exit(f"no clips under {oc.TALKING_FACES}")
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(args.seeds))
    per_folder: dict[str, int] = {}
    jobs = []
    for c in todo:
        k = per_folder.get(c.parent.name, 0)
        per_folder[c.parent.name] = k + 1
        jobs.append((c, k < args.sheets))
    rows, coverage = [], {}
    t0 = time.time()
    with tqdm(total=len(jobs), desc="clips", unit="clip") as bar:
        if args.jobs > 1:
            from concurrent.futures import ProcessPoolExecutor
            with ProcessPoolExecutor(args.jobs) as ex:
                futs = [ex.submit(build_clip, c, seeds, args.out, args, s) for c, s in jobs]
                for f in futs:
                    r, cov, _ = f.result()
                    rows += r
                    coverage.update(cov)
                    bar.update(1)
        else:
            for c, s in jobs:
                bar.set_postfix_str(f"{c.parent.name}/{c.name}")
                r, cov, _ = build_clip(c, seeds, args.out, args, s)
                rows += r
                coverage.update(cov)
                bar.update(1)
    with open(args.out / "corpus.csv", "w", newline="") as fh:
        wr = csv.DictWriter(fh, COLUMNS)
        wr.writeheader()
        wr.writerows(rows)
    (args.out / "coverage.json").write_text(json.dumps(coverage))
    took = time.time() - t0

    counts: dict[tuple, int] = {}
    for r in rows:
        key = (r["label"], r["family"], r["occluder"])
        counts[key] = counts.get(key, 0) + 1
    print(f"\n{len(rows)} videos from {len(todo)} clips x {len(seeds)} seeds in {took:.0f} s -> {args.out}")
    print("| label | family | occluder | videos |\n|---|---|---|---|")
    for (label, family, occluder), n in sorted(counts.items()):
        print(f"| {label} | {family} | {occluder} | {n} |")
    acr = [r["peak_coverage"] for r in rows if r["occluder"] == "across" and r["label"] == "real"]
    bes = [r["peak_coverage"] for r in rows if r["occluder"] == "beside"]
    if acr:
        print(f"peak coverage across: min {min(acr):.2f} median {np.median(acr):.2f} max {max(acr):.2f}; "
              f"beside: max {max(bes):.2f}")
    size = sum(os.path.getsize(args.out / r["path"]) for r in rows)
    print(f"{size / 1e6:.1f} MB of video; corpus.csv, coverage.json, sheets/ in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
