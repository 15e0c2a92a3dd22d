"""`verity up`: everything on one host with embedded defaults: Redis (unless REDIS_URL), the
migrations, the web server, the detector workers and the webhook worker; Ctrl-C stops them all."""

from __future__ import annotations

import shutil
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

import click

from cli import embedded_redis
from cli.options import DATA_DIR_OPTION, redact, settings_for
from cli.supervisor import DataDirBusy, Supervisor, child_env, hold_data_dir
from cli.worker import WorkerCount, worker_layout
from core.settings import generated_secret, ops_token_file


def check_port_free(host: str, port: int) -> None:
    """One clear line, before anything starts, when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            sock.bind((host, port))
        except OSError as e:
            raise click.ClickException(
                f"port {port} on {host} is in use ({e.strerror}): another program, or a Verity still running, "
                f"listens there; stop it, or choose another port with --port") from None


def answers_ready(host: str, port: int) -> bool:
    """/readyz answers 200: the web server is bound, the database and Redis answer, and a
    detector worker is registered."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/readyz", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


@click.command("up")
@DATA_DIR_OPTION
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--workers", "num_workers", type=WorkerCount(), default="auto", show_default=True,
              help="Detector worker processes, or auto: one per CPU (up to 4), one with CUDA.")
def up_command(data_dir: Path | None, host: str, port: int, num_workers: int | str) -> None:
    """Start everything with embedded defaults: Redis (unless REDIS_URL), migrations, web, workers."""
    from core.db import upgrade

    s = settings_for(data_dir)
    num_workers, threads = worker_layout(s, num_workers)
    try:
        lock = hold_data_dir(s.data_dir)  # noqa: F841 - held until this process ends
    except DataDirBusy as e:
        raise click.ClickException(str(e)) from None
    check_port_free(host, port)
    if s.ops_token is None:  # /metrics and the details of /readyz are the operator's
        s = s.with_(ops_token=generated_secret(ops_token_file(s.data_dir)))
    redis_proc = None
    if not s.redis_url:
        redis_proc, url = embedded_redis.start(s.data_dir)
        s = s.with_(redis_url=url)
        click.echo(f"redis     embedded, AOF in {s.data_dir / 'redis'} ({redact(url)})")
    else:
        click.echo(f"redis     {redact(s.redis_url)}")
    try:
        upgrade(s.database_url)
        click.echo(f"database  {redact(s.database_url)} (migrated)")
        env = child_env(s)
        metrics_dir = s.data_dir / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        sup = Supervisor()
        sup.spawn("web", [sys.executable, "-m", "cli", "web", "--host", host, "--port", str(port)],
                  env, restart=False)
        sup.spawn("workers", [sys.executable, "-m", "cli", "worker", "-n", str(num_workers)], env,
                  restart=True)
        sup.spawn("webhooks", [sys.executable, "-m", "cli", "webhooks", "worker"], env, restart=False)
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        shown = f"[{shown}]" if ":" in shown else shown
        click.echo(f"workers   {num_workers} detector worker(s), {threads} onnxruntime thread(s) each")
        token_file = ops_token_file(s.data_dir)
        if token_file.is_file() and token_file.read_text().strip() == s.ops_token:
            click.echo(f"metrics   need the operator token in {token_file}: curl -H \"Authorization: Bearer "
                       f"$(cat {token_file})\" http://{shown}:{port}/metrics")
        click.echo("waiting   for the web server and a detector worker (the model loads in each)...")
        sys.stdout.flush()

        def up() -> None:
            click.echo(f"Verity is up: http://{shown}:{port}/   (Ctrl-C stops it)", color=False)
            sys.stdout.flush()

        rc = sup.run(ready=lambda: answers_ready(shown, port), on_ready=up)
    finally:
        if redis_proc is not None:
            embedded_redis.stop(redis_proc, s.data_dir)
    click.echo("Verity stopped.")
    sys.exit(rc)
