"""Classifier benchmark: exported models side by side on the same crops, in one run.

A backbone is chosen on held-out AUC (`python -m training.compare`) and on speed; this gives the
speed. For each model folder: milliseconds for one face (batch 1: a photo with one face) and
faces/s at batch 8 (a video's sampled frames), through the runtime's own Classifier (its
preprocessing and, when model.json turns it on, the test-time flip), against the FIRST model named
(the baseline). Rounds of the models are interleaved so that a load change on a shared machine
hits them alike; medians are printed, with the load average before and after.

    python bench/classifiers.py models/verity-sbi /tmp/verity-mnv2 [--rounds 40]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="model folders (model.json + ONNX); the first is the baseline")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--batch", type=int, default=8, help="crops per run for the throughput column")
    args = ap.parse_args()

    import onnxruntime as ort
    from rich.console import Console
    from rich.table import Table

    from bench.detector import machine
    from detector.classifier import Classifier
    from detector.manifest import load_manifest

    out = Console(width=150)
    cores, cpu = machine()
    load0 = os.getloadavg()
    out.print(f"[bold]verity classifier benchmark[/bold] · {datetime.datetime.now().isoformat(timespec='seconds')} · "
              f"{cores} cores ({cpu}) · Python {platform.python_version()} · onnxruntime {ort.__version__}")

    rng = np.random.default_rng(0)
    models = []
    for folder in args.models:
        manifest = load_manifest(folder)
        clf = Classifier(manifest, "cpu")
        size = manifest.input.size
        views = len(manifest.crop_margins)  # tta.margins: that many crops of each face
        crops = rng.integers(0, 256, size=(args.batch, views, size, size, 3), dtype=np.uint8)
        clf(crops)  # warm-up: the first run allocates
        models.append((manifest, clf, crops))

    one = [[] for _ in models]
    many = [[] for _ in models]
    for r in range(args.rounds):
        for k in range(len(models)):  # each round starts with a different model
            i = (r + k) % len(models)
            _m, clf, crops = models[i]
            t = time.perf_counter()
            clf(crops[:1])
            one[i].append(time.perf_counter() - t)
            t = time.perf_counter()
            clf(crops)
            many[i].append(time.perf_counter() - t)

    base_one = statistics.median(one[0])
    base_many = statistics.median(many[0])
    table = Table(title=f"classifiers, {args.rounds} interleaved rounds, medians; baseline = {models[0][0].name} "
                        f"{models[0][0].version}")
    for col in ("model", "backbone", "input", "ONNX MB", "tta flip", "crop margins", "ms per face (batch 1)",
                f"faces/s (batch {args.batch})", "speed vs baseline (batch 1 / batch 8)"):
        table.add_column(col, justify="right" if col not in ("model", "backbone") else "left")
    for i, (m, _clf, _crops) in enumerate(models):
        t1, tn = statistics.median(one[i]), statistics.median(many[i])
        backbone = m.training.get("backbone") or " + ".join(
            str(x.get("backbone")) for x in m.training.get("members", [])) or "?"
        table.add_row(f"{m.name} {m.version}", backbone, f"{m.input.size} px",
                      f"{m.model_path.stat().st_size / 1e6:.1f}", "on" if m.tta.hflip else "off",
                      " / ".join(f"{x:g}" for x in m.crop_margins),
                      f"{t1 * 1000:.2f}", f"{args.batch / tn:.0f}",
                      f"{base_one / t1:.2f}x / {base_many / tn:.2f}x")
    out.print(table)
    out.print(f"load average {load0[0]:.2f} before, {os.getloadavg()[0]:.2f} after · random crops (the cost of a "
              f"convolutional network does not depend on the pixels) · the face detector is the same for every model "
              f"and is measured by bench/detector.py")


if __name__ == "__main__":
    main()
