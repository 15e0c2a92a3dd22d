"""`verity eval`: measure the detector on labelled real and fake media (detector/evaluation.py)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import click

from detector.evaluation import (
    CONDITIONS,
    FAKE,
    REAL,
    build_report,
    items_from_csv,
    items_from_folders,
    per_file_table,
    plan,
    report_tables,
    run_evaluation,
)


def _conditions(ctx, param, value: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(c.strip() for c in value.split(",") if c.strip()))
    bad = [c for c in names if c not in CONDITIONS]
    if bad or not names:
        raise click.BadParameter(f"unknown condition(s) {', '.join(bad) or '(none)'}; known: {', '.join(CONDITIONS)}")
    return names


@click.command("eval")
@click.option("--real", "real", multiple=True, type=click.Path(file_okay=False), help="Folder of real media (recursive; repeatable).")
@click.option("--fake", "fake", multiple=True, type=click.Path(file_okay=False), help="Folder of manipulated media (recursive; repeatable).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, exists=True),
              help="CSV of path,label[,condition[,group]] rows (label real/fake or 0/1).")
@click.option("--conditions", default="original", show_default=True, callback=_conditions,
              help=f"Comma-separated, from: {', '.join(CONDITIONS)}.")
@click.option("--model", default=None, help="Model name under models/, a directory, or a model.json.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
              help="Execution provider (default VERITY_DEVICE or auto).")
@click.option("--frames", type=click.IntRange(1, 256), default=None, help="Frames sampled per video.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option("--per-file", is_flag=True, help="Also list every file's score.")
def eval_command(real, fake, csv_path, conditions, model, device, frames, as_json, per_file):
    """Measure the detector on labelled real and fake media.

    Prints ROC-AUC, average precision, EER and TPR at 5% FPR overall and per set, for each
    condition. Items with no face, and unreadable items, are counted apart and left out of
    the metrics (never scored as authentic).
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from cli.scan import make_detector
    from detector.manifest import ManifestError
    from detector.runtime import ProviderError

    err = Console(stderr=True)
    try:
        items = items_from_folders(real, fake)
        if csv_path:
            items += items_from_csv(csv_path)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    if not items:
        raise click.UsageError("no media: give --real/--fake folders or a --csv")
    if not any(i.label == REAL for i in items) or not any(i.label == FAKE for i in items):
        err.print("[yellow]warning:[/yellow] only one class given; ranking metrics will be '-'")
    try:
        det = make_detector(model, device, frames)
        det.warmup()
    except (ManifestError, ProviderError, ValueError) as e:
        err.print(f"[red]cannot start the detector:[/red] {e}")
        sys.exit(1)

    jobs = len(plan(items, conditions))
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, disable=not err.is_terminal, transient=True) as bar:
        task = bar.add_task("evaluating", total=jobs)
        outcomes = run_evaluation(det, items, conditions,
                                  on_done=lambda o: bar.update(task, advance=1, description=Path(o.path).name[:40]))
    report = build_report(outcomes, det.manifest.thresholds.review)
    report["model"] = {"name": det.model_name, "version": det.model_version, "provider": det.provider}
    if as_json:
        if per_file:
            report["files"] = [asdict(o) for o in outcomes]
        click.echo(json.dumps(report, indent=2))
        return
    out = Console() if sys.stdout.isatty() else Console(width=200)
    if per_file:
        out.print(per_file_table(outcomes))
    for t in report_tables(report, f"verity eval · {det.model_name} {det.model_version} · {det.provider} · "
                                   f"threshold {report['threshold']:.2f}"):
        out.print(t)
