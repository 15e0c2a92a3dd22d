"""gunicorn, started from Python so `verity web` needs no separate config file."""

from __future__ import annotations

import os

from gunicorn.app.base import BaseApplication

from core import defaults
from core.settings import Settings


def _child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


class WebServer(BaseApplication):
    def __init__(self, settings: Settings, host: str, port: int, workers: int = defaults.WEB_WORKERS,
                 threads: int = defaults.WEB_THREADS):
        self.settings = settings
        self.options = {
            "bind": f"{host}:{port}",
            "workers": workers,
            "threads": threads,
            "worker_class": "gthread",
            "timeout": 120,
            "graceful_timeout": defaults.WEB_GRACE_SECONDS,
            "accesslog": settings.access_log,
            "errorlog": "-",
            "loglevel": settings.log_level.lower(),
            "child_exit": _child_exit,
            "proc_name": "verity-web",
            # One shared $HOME/.gunicorn/gunicorn.ctl would collide between instances on a host.
            "control_socket_disable": True,
        }
        super().__init__()

    def load_config(self):
        for k, v in self.options.items():
            if v is not None:
                self.cfg.set(k, v)

    def load(self):
        from app import create_app

        return create_app({"VERITY": self.settings})
