"""`verity worker -n N`: detector workers on the analysis queue (one process each)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cli.options import DATA_DIR_OPTION, settings_for
from cli.supervisor import Supervisor, child_env


@click.command("worker")
@DATA_DIR_OPTION
@click.option("-n", "--num", "num", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Worker processes (each loads its own detector).")
@click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
@click.option("--max-jobs", type=int, default=None, help="Exit after this many jobs (a supervisor restarts it).")
def worker_command(data_dir: Path | None, num: int, burst: bool, max_jobs: int | None) -> None:
    """Run detector workers on the analysis queue."""
    s = settings_for(data_dir)
    s.require_redis_url()
    if num == 1:
        from detector.manifest import ManifestError
        from detector.runtime import ProviderError
        from workers.worker import run_worker

        try:
            ok = run_worker(s, burst=burst, max_jobs=max_jobs)
        except (ManifestError, ProviderError) as e:
            # An installation fault: retrying cannot help, an operator must act (`verity doctor`).
            raise click.ClickException(f"the detector cannot start: {e}") from None
        sys.exit(0 if ok or burst else 1)
    cmd = [sys.executable, "-m", "cli", "worker", "-n", "1"]
    if burst:
        cmd.append("--burst")
    if max_jobs:
        cmd += ["--max-jobs", str(max_jobs)]
    env = child_env(s)
    sup = Supervisor()
    for i in range(num):
        sup.spawn(f"worker-{i + 1}", cmd, env, restart=not burst)
    sys.exit(sup.run())
