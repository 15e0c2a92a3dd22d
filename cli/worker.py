"""`verity worker -n N|auto`: detector workers on the analysis queue (one process each)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cli.options import DATA_DIR_OPTION, settings_for
from cli.supervisor import Supervisor, child_env
from core import defaults
from core.settings import Settings


class WorkerCount(click.ParamType):
    """A number of worker processes (1-64), or `auto` (see `worker_layout`)."""

    name = "N|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or str(value).lower() == "auto":
            return value if isinstance(value, int) else "auto"
        try:
            n = int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number nor 'auto'", param, ctx)
        if not 1 <= n <= 64:
            self.fail(f"{n} is not between 1 and 64", param, ctx)
        return n


def worker_layout(settings: Settings, num: int | str) -> tuple[int, int]:
    """(worker processes, onnxruntime threads per process) for this host.

    `auto`: with CUDA one worker (one per GPU); on CPUs one worker per CPU (at most
    AUTO_WORKERS_MAX), each with one thread. Measured on 2 cores (bench/service.py): two
    single-threaded workers keep the cores busy while the other one does its bookkeeping (the
    database, Redis, RQ), where one two-threaded worker leaves them idle meanwhile. Threads: the
    operator's VERITY_ORT_THREADS, else the CPUs shared out among the workers (a worker alone
    takes them all), so that N workers never run N times the cores in threads."""
    from detector.runtime import cpu_threads, cuda_available

    cpus = cpu_threads()
    if num == "auto":
        cuda = settings.device == "cuda" or (settings.device == "auto" and cuda_available())
        num = 1 if cuda else max(1, min(cpus, defaults.AUTO_WORKERS_MAX))
    return num, settings.ort_threads or max(1, cpus // num)


@click.command("worker")
@DATA_DIR_OPTION
@click.option("-n", "--num", "num", type=WorkerCount(), default=1, show_default=True,
              help="Worker processes (each loads its own detector), or auto: one per CPU, one with CUDA.")
@click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
@click.option("--max-jobs", type=int, default=None, help="Exit after this many jobs (a supervisor restarts it).")
def worker_command(data_dir: Path | None, num: int | str, burst: bool, max_jobs: int | None) -> None:
    """Run detector workers on the analysis queue."""
    s = settings_for(data_dir)
    s.require_redis_url()
    num, threads = worker_layout(s, num)
    if num == 1:
        from detector.manifest import ManifestError
        from detector.runtime import ProviderError
        from workers.worker import run_worker

        try:
            ok = run_worker(s.with_(ort_threads=threads), burst=burst, max_jobs=max_jobs)
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
    env["VERITY_ORT_THREADS"] = str(threads)
    sup = Supervisor(grace=defaults.POOL_GRACE_SECONDS, own_groups=False)  # its workers stay in its group
    for i in range(num):
        sup.spawn(f"worker-{i + 1}", cmd, env, restart=not burst)
    sys.exit(sup.run())
