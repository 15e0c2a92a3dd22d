"""Child processes of `verity up` and `verity worker -n N`: started, restarted after a crash,
stopped together."""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from core import defaults
from core.settings import Settings

PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None]:
    """A Popen `preexec_fn` that makes the child get SIGTERM when this process dies, however it
    dies: a SIGKILLed launcher must not leave its Redis, web server or workers running, holding
    the port and the data dir (Linux prctl; a no-op elsewhere)."""
    parent = os.getpid()
    # Looked up here, in the parent: between fork and exec the child only calls into libc (the
    # launcher runs no other thread, and the child takes no lock).
    prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None

    def preexec() -> None:
        if prctl is None:
            return
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl: nobody will signal us
            os._exit(1)

    return preexec


class DataDirBusy(RuntimeError):
    """Another launcher holds this data dir."""


def hold_data_dir(data_dir: Path):
    """An exclusive lock on <data dir>/up.lock for as long as the returned file stays open (the
    kernel drops it when this process dies, however). One `verity up` per data dir."""
    path = data_dir / "up.lock"
    f = open(path, "a+")  # noqa: SIM115 - held open for the launcher's life
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "?"
        f.close()
        raise DataDirBusy(f"another `verity up` (pid {holder}) is running on {data_dir}; stop it first, "
                          "or give this one another --data-dir") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


def child_env(s: Settings) -> dict[str, str]:
    """The environment of a child process: this one's, with the settings the children must share."""
    env = dict(os.environ)
    env["VERITY_DATA_DIR"] = str(s.data_dir)
    env["DATABASE_URL"] = s.database_url
    if s.redis_url:
        env["REDIS_URL"] = s.redis_url
    return env


class Supervisor:
    """Starts child processes, forwards SIGINT/SIGTERM to them, and stops all when one dies;
    a child marked `restart` (detector workers) is started again after a crash, unless it died
    within FAST_FAIL_SECONDS of its start (a configuration fault: retrying would only loop)."""

    FAST_FAIL_SECONDS = 20

    def __init__(self) -> None:
        self.children: dict[str, tuple[list[str], dict, bool, subprocess.Popen]] = {}
        self.started: dict[str, float] = {}
        self.stopping = False

    def spawn(self, name: str, cmd: list[str], env: dict, restart: bool) -> None:
        proc = subprocess.Popen(cmd, env=env, preexec_fn=die_with_parent())  # noqa: PLW1509 - see die_with_parent
        self.children[name] = (cmd, env, restart, proc)
        self.started[name] = time.monotonic()

    def _on_signal(self, signum, _frame) -> None:
        self.stopping = True

    def run(self) -> int:
        old = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        rc = 0
        try:
            while not self.stopping:
                for name, (cmd, env, restart, proc) in list(self.children.items()):
                    code = proc.poll()
                    if code is None:
                        continue
                    lived = time.monotonic() - self.started[name]
                    # Killed by a signal (code < 0: the OOM killer, an operator's kill -9) is a crash
                    # whenever it happens, not a configuration fault: restart it (tests/chaos).
                    if restart and code != 0 and (lived >= self.FAST_FAIL_SECONDS or code < 0):
                        click.echo(f"{name} exited with {code} after {lived:.0f}s; restarting", err=True)
                        time.sleep(1)
                        self.spawn(name, cmd, env, restart)
                    elif restart and code == 0:
                        del self.children[name]
                    else:
                        if code != 0:
                            click.echo(f"{name} exited with {code}; stopping", err=True)
                            rc = code
                        del self.children[name]
                        self.stopping = True
                if not self.children:
                    break
                time.sleep(0.2)
        finally:
            self.stop_all()
            for sig, h in old.items():
                signal.signal(sig, h)
        return rc

    def stop_all(self) -> None:
        procs = [p for (_, _, _, p) in self.children.values() if p.poll() is None]
        for p in procs:
            p.send_signal(signal.SIGTERM)  # rq: warm shutdown (finish the job); gunicorn: graceful
        deadline = time.monotonic() + defaults.SHUTDOWN_GRACE_SECONDS
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
