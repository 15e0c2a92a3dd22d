"""`verity web`: the web app and API under gunicorn (no separate config file)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import click

from cli.options import DATA_DIR_OPTION, settings_for
from core import defaults


@click.command("web")
@DATA_DIR_OPTION
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--processes", type=int, default=defaults.WEB_WORKERS, show_default=True,
              help="gunicorn worker processes.")
def web_command(data_dir: Path | None, host: str, port: int, processes: int) -> None:
    """Serve the web app and API with gunicorn."""
    s = settings_for(data_dir)
    s.require_redis_url()
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Several gunicorn processes must pool their counters (prometheus multiprocess mode);
        # `verity up` sets a directory shared with its workers, a standalone web gets its own.
        # prometheus-client reads the variable itself, so it is set before the app is loaded.
        mdir = s.data_dir / "metrics-web"
        shutil.rmtree(mdir, ignore_errors=True)
        mdir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(mdir)
    from app.server import WebServer

    WebServer(s, host, port, workers=processes).run()
