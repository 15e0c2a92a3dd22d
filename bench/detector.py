"""Detector benchmark: the pipeline against raw onnxruntime, and frame sampling against decoding all.

One run, one printed table, every figure against a baseline measured in the same run:

1. photo   a 1920x1080 JPEG with one real face: end-to-end images/s and ms per stage
           (decode, detect, crop, classify), against the ceiling = the face-detector session and
           the classifier session alone on the very same tensors (target: pipeline >= 85% of
           the ceiling; <= 150 ms end to end on 2 cores);
2. side    the 1080p photo, a 4032x3024 JPEG (a phone's 12 MP photo) and a 6000x4000 one (24 MP)
           with four faces 55-75 px across: end to end as the pipeline detects a photo now (shrunk
           by at most 2x, up to 1280 px: FaceDetector.photo_side; a photo over 2560 px also in
           2560 px tiles: FaceDetector.detect_photo) against the same pipeline without the tiles
           and detecting at the video-frame side (640 px, what every photo got before),
           interleaved, and the faces each finds;
3. video   a 30 s 720p H.264 clip (made here with PyAV from a face photo, slight motion):
           end-to-end seconds for 32 sampled frames (target <= 4 s on 2 cores), and the
           sampler's frames/s against the naive baseline of decoding every frame with PyAV.

Rounds of pipeline and ceiling are interleaved so that a load change on a shared machine hits
both alike; medians are printed, with the load average before and after.

    python bench/detector.py [--rounds 15] [--model verity-sbi] [--video-runs 3]

Needs the shipped model (or VERITY_MODEL) and a real face photo in ../shared/data/faces-london.
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FACES = REPO.parent / "shared" / "data" / "faces-london" / "neutral_front"
PHOTO_TARGET_MS = 150.0
VIDEO_TARGET_S = 4.0
RATIO_TARGET = 0.85


def face_photo(size: tuple[int, int], face_height: int) -> Image.Image:
    """A real face photo scaled onto a plain canvas (as tests/mediagen.py does)."""
    paths = sorted(FACES.glob("*.jpg"))
    if not paths:
        sys.exit(f"no face photos in {FACES} (../shared/data beside the repository)")
    src = Image.open(paths[0]).convert("RGB")
    src = src.resize((round(src.width * face_height / src.height), face_height), Image.BILINEAR)
    canvas = Image.new("RGB", size, (96, 110, 120))
    canvas.paste(src, ((size[0] - src.width) // 2, (size[1] - src.height) // 2))
    return canvas


def group_photo(size: tuple[int, int] = (4032, 3024), photo_height: int = 180) -> Image.Image:
    """Four different face photos side by side in the middle of a large plain canvas."""
    paths = sorted(FACES.glob("*.jpg"))[:4]
    canvas = Image.new("RGB", size, (96, 110, 120))
    for i, p in enumerate(paths):
        src = Image.open(p).convert("RGB")
        src = src.resize((round(src.width * photo_height / src.height), photo_height), Image.BILINEAR)
        canvas.paste(src, (size[0] // 2 - 600 + i * 300, (size[1] - photo_height) // 2))
    return canvas


def write_clip(path: Path, image: Image.Image, seconds: float = 30.0, fps: int = 30) -> Path:
    """H.264 (libx264, yuv420p, GOP 2 s) of the image drifting and breathing slightly."""
    base = np.asarray(image)
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height = image.size
    stream.pix_fmt = "yuv420p"
    stream.options = {"preset": "veryfast", "g": str(2 * fps), "crf": "23"}
    for i in range(int(seconds * fps)):
        frame = np.roll(base, (int(4 * np.sin(i / 7)), int(8 * np.sin(i / 11))), axis=(0, 1))
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def decode_every_frame(path: Path, n: int) -> int:
    """The naive baseline: decode every frame, convert n evenly spaced ones to RGB."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        total = stream.frames
        want = {int((i + 0.5) * total / n) for i in range(n)}
        got = 0
        for i, frame in enumerate(c.decode(stream)):
            if i in want:
                frame.to_ndarray(format="rgb24")
                got += 1
    return got


def machine() -> tuple[int, str]:
    """The cores this process may use and the CPU's model name, for a benchmark's header."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), "?")
    return len(os.sched_getaffinity(0)), cpu


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--video-runs", type=int, default=3)
    ap.add_argument("--model", default=None)
    ap.add_argument("--frames", type=int, default=32)
    args = ap.parse_args()

    import onnxruntime as ort
    from rich.console import Console
    from rich.table import Table

    from detector import media
    from detector.crops import crop_face
    from detector.pipeline import Detector

    out = Console(width=150)
    cores, cpu = machine()
    load0 = os.getloadavg()
    det = Detector(model=args.model, device="cpu", frames=args.frames)
    det.warmup()
    out.print(f"[bold]verity detector benchmark[/bold] · {datetime.datetime.now().isoformat(timespec='seconds')} · "
              f"{cores} cores ({cpu}) · Python {platform.python_version()} · onnxruntime {ort.__version__} · "
              f"model {det.model_name} {det.model_version} · {det.provider}")

    # --- photo ------------------------------------------------------------------------------
    buf = io.BytesIO()
    face_photo((1920, 1080), 600).save(buf, "JPEG", quality=90)
    jpeg = buf.getvalue()
    rgb, _ = media.load_image(jpeg)
    side = det.face_detector.photo_side(*rgb.shape[:2])  # the side the pipeline detects a photo at
    faces = det.face_detector.detect(rgb, side)
    if len(faces) != 1:
        sys.exit(f"expected one face in the benchmark photo, found {len(faces)}")
    f = faces[0]
    spec = det.manifest
    crops = np.stack([crop_face(rgb, f.box, f.landmarks, spec.input.size, m, spec.crop.align)
                      for m in spec.crop_margins])  # one crop per margin (tta.margins)
    blob, _ = det.face_detector.prepare(rgb, side)
    fsess, fname = det.face_detector.session, det.face_detector.input_name
    batch = det.classifier.inputs(crops)  # what the pipeline runs (with mirrored copies under tta.hflip)

    stages: dict[str, list[float]] = {k: [] for k in ("decode", "detect", "crop", "classify", "total")}
    from_array, ceil_detect, ceil_classify, cpu_pipe, cpu_ceil = [], [], [], [], []
    for _ in range(args.rounds):
        c = time.process_time()
        res = det.analyze_bytes(jpeg)
        cpu_pipe.append((time.process_time() - c) * 1000)
        for k, xs in stages.items():
            xs.append(res.timings_ms.get(k, 0.0))
        t = time.perf_counter()
        det.analyze_image(rgb)
        from_array.append((time.perf_counter() - t) * 1000)
        c = time.process_time()
        t = time.perf_counter()
        fsess.run(None, {fname: blob})
        t2 = time.perf_counter()
        det.classifier.raw(batch)
        t3 = time.perf_counter()
        cpu_ceil.append((time.process_time() - c) * 1000)
        ceil_detect.append((t2 - t) * 1000)
        ceil_classify.append((t3 - t2) * 1000)

    e2e = med(stages["total"])
    arr = med(from_array)
    ceiling = med(ceil_detect) + med(ceil_classify)
    t1 = Table(title=f"1080p JPEG, one face ({len(jpeg) // 1024} KiB): medians of {args.rounds} rounds, ms",
               title_justify="left")
    for col in ("path", "images/s", "total ms", "decode", "detect", "crop", "classify", "vs ceiling", "CPU ms",
                "target"):
        t1.add_column(col, justify="left" if col == "path" else "right")
    t1.add_row("pipeline, from JPEG bytes (analyze_bytes)", f"{1000 / e2e:.1f}", f"{e2e:.1f}",
               f"{med(stages['decode']):.1f}", f"{med(stages['detect']):.1f}", f"{med(stages['crop']):.1f}",
               f"{med(stages['classify']):.1f}", f"{ceiling / e2e:.0%}", f"{med(cpu_pipe):.0f}",
               f"<= {PHOTO_TARGET_MS:.0f} ms: {'met' if e2e <= PHOTO_TARGET_MS else 'MISSED'}")
    t1.add_row("pipeline, from decoded RGB (analyze_image)", f"{1000 / arr:.1f}", f"{arr:.1f}", "-", "-", "-", "-",
               f"{ceiling / arr:.0%}", "", f">= {RATIO_TARGET:.0%}: {'met' if ceiling / arr >= RATIO_TARGET else 'MISSED'}")
    t1.add_row("ceiling: raw ORT detector + classifier runs", f"{1000 / ceiling:.1f}", f"{ceiling:.1f}", "-",
               f"{med(ceil_detect):.1f}", "-", f"{med(ceil_classify):.1f}", "100%", f"{med(cpu_ceil):.0f}", "")
    out.print(t1)
    out.print(f"detector input {blob.shape[3]}x{blob.shape[2]} (a photo's side {side}; video frames "
              f"{det.face_detector.max_side}); "
              f"classifier input {spec.input.size}px, batch {batch.shape[0]}"
              f" (the face cropped at {' and '.join(f'{m:g}' for m in spec.crop_margins)}"
              f"{', each with its mirror: tta.hflip' if spec.tta.hflip else ''})"
              f". Detect stage in the pipeline = resize + "
              f"normalise + ORT run + decode/NMS; ceiling = ORT run only. CPU ms = process CPU time (all threads), "
              f"less sensitive than wall time to other load on the machine.")

    # --- a photo's detection side ------------------------------------------------------------
    buf = io.BytesIO()
    group_photo().save(buf, "JPEG", quality=90)
    big = io.BytesIO()
    group_photo((6000, 4000)).save(big, "JPEG", quality=90)
    photos = [("1920x1080 JPEG, one face (the photo above)", jpeg, 1, rgb.shape[:2]),
              (f"4032x3024 JPEG, four faces 55-75 px ({len(buf.getvalue()) // 1024} KiB)", buf.getvalue(), 4,
               (3024, 4032)),
              (f"6000x4000 JPEG, four faces 55-75 px ({len(big.getvalue()) // 1024} KiB)", big.getvalue(), 4,
               (4000, 6000))]
    fd = det.face_detector
    cap = fd.still_max_side
    variants = (("now", cap, True), ("whole", cap, False), ("640", fd.max_side, False))
    runs: dict[tuple[int, str], tuple[list, list]] = {(i, k[0]): ([], []) for i in range(len(photos)) for k in variants}
    try:
        for _ in range(args.rounds):
            for i, (_, data, _, _) in enumerate(photos):
                # interleaved: a load change hits all three; the baselines: no tiles, and a
                # photo's side capped at the video-frame side, what every photo had before
                for key, side_cap, tiled in variants:
                    fd.still_max_side, fd.tiled = side_cap, tiled
                    res = det.analyze_bytes(data)
                    runs[i, key][0].append(res.timings_ms)
                    runs[i, key][1].append(len(res.frames[0].faces) if res.frames else 0)
    finally:
        fd.still_max_side, fd.tiled = cap, True
    tg = Table(title=f"A photo's face detection (FaceDetector.detect_photo) against the same without tiles and at "
                     f"640 px, the video-frame side every photo had before: medians of {args.rounds} rounds, ms",
               title_justify="left")
    for col in ("photo", "detection side", "faces found", "total ms", "decode", "detect", "classify", "vs 640 px"):
        tg.add_column(col, justify="left" if col in ("photo", "detection side") else "right")
    for i, (name, _, n_faces, hw) in enumerate(photos):
        base_total = med([t["total"] for t in runs[i, "640"][0]])
        n_tiles = len(fd.tiles(*hw))
        for key, label in (("now", f"{fd.photo_side(*hw)} px" + (f" + {n_tiles} tiles" if n_tiles else "") + " (now)"),
                           ("whole", f"{fd.photo_side(*hw)} px, no tiles"), ("640", f"{fd.max_side} px (baseline)")):
            if key == "whole" and not n_tiles:
                continue
            tm, found = runs[i, key]
            total = med([t["total"] for t in tm])
            tg.add_row(name if key == "now" else "", label, f"{min(found)}-{max(found)} of {n_faces}", f"{total:.1f}",
                       f"{med([t['decode'] for t in tm]):.1f}", f"{med([t['detect'] for t in tm]):.1f}",
                       f"{med([t['classify'] for t in tm]):.1f}", f"{total / base_total:.2f}x")
    out.print(tg)

    # --- video ------------------------------------------------------------------------------
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip-720p-30s.mp4"
        t = time.perf_counter()
        write_clip(clip, face_photo((1280, 720), 480))
        made = time.perf_counter() - t
        runs, sample_s, naive_s, per_stage = [], [], [], []
        for _ in range(args.video_runs):
            t = time.perf_counter()
            n = sum(1 for _ in media.sample_video(clip, args.frames))
            sample_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            got = decode_every_frame(clip, args.frames)
            naive_s.append(time.perf_counter() - t)
            res = det.analyze_path(clip)
            runs.append(res.timings_ms["total"] / 1000)
            per_stage.append(res.timings_ms)
        with av.open(str(clip)) as c:
            total_frames = c.streams.video[0].frames
        size_mb = clip.stat().st_size / 1e6
    v = med(runs)
    t2 = Table(title=f"30 s 720p H.264 clip ({total_frames} frames, {size_mb:.1f} MB, made in {made:.0f} s), "
                     f"{args.frames} sampled frames: medians of {args.video_runs} runs", title_justify="left")
    for col in ("path", "seconds", "sampled frames/s", "speed-up vs naive", "target"):
        t2.add_column(col, justify="left" if col == "path" else "right")
    stage = {k: med([p.get(k, 0.0) for p in per_stage]) / 1000 for k in ("decode", "detect", "crop", "classify")}
    t2.add_row("end to end (analyze_path)", f"{v:.2f}", f"{n / v:.1f}", "",
               f"<= {VIDEO_TARGET_S:.0f} s: {'met' if v <= VIDEO_TARGET_S else 'MISSED'}")
    t2.add_row("  of which decode/sample", f"{stage['decode']:.2f}", "", "", "")
    t2.add_row("  of which detect (32 frames)", f"{stage['detect']:.2f}", "", "", "")
    t2.add_row("  of which crop", f"{stage['crop']:.2f}", "", "", "")
    t2.add_row("  of which classify (one batch)", f"{stage['classify']:.2f}", "", "", "")
    t2.add_row("sampler alone (media.sample_video)", f"{med(sample_s):.2f}", f"{n / med(sample_s):.1f}",
               f"{med(naive_s) / med(sample_s):.2f}x", "")
    t2.add_row(f"naive: decode all {total_frames} frames with PyAV", f"{med(naive_s):.2f}",
               f"{got / med(naive_s):.1f}", "1.00x", "")
    out.print(t2)
    load1 = os.getloadavg()
    out.print(f"load average before {load0[0]:.1f}, after {load1[0]:.1f} on {cores} cores"
              + (" — the machine was shared: absolute times are inflated, ratios less so" if max(load0[0], load1[0]) > cores
                 else ""))


if __name__ == "__main__":
    main()
