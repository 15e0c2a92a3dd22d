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
    """Starts child processes, stops them all when one dies or a stop is asked for; a child
    marked `restart` (detector workers) is started again after a crash, unless it died within
    FAST_FAIL_SECONDS of its start (a configuration fault: retrying would only loop).

    Stopping: SIGTERM to each child (only the child: it stops what is under it, e.g. gunicorn its
    workers), `grace` seconds for them to finish, then SIGKILL to each child's whole process
    group. With `own_groups` each child leads its own process group, so a Ctrl-C in the terminal
    reaches the supervisor alone (not every process twice, once from the terminal and once
    forwarded, which deadlocked gunicorn's workers) and the final SIGKILL takes the child's
    descendants with it. A second Ctrl-C or SIGTERM kills everything at once."""

    FAST_FAIL_SECONDS = 20

    def __init__(self, *, grace: float = defaults.SHUTDOWN_GRACE_SECONDS, own_groups: bool = True) -> None:
        self.children: dict[str, tuple[list[str], dict, bool, subprocess.Popen]] = {}
        self.started: dict[str, float] = {}
        self.grace = grace
        self.own_groups = own_groups
        self.stopping = False
        self.hurry = False

    def spawn(self, name: str, cmd: list[str], env: dict, restart: bool) -> None:
        proc = subprocess.Popen(cmd, env=env, preexec_fn=die_with_parent(),  # noqa: PLW1509 - see die_with_parent
                                process_group=0 if self.own_groups else None)
        self.children[name] = (cmd, env, restart, proc)
        self.started[name] = time.monotonic()

    def _on_signal(self, signum, _frame) -> None:
        if self.stopping:
            self.hurry = True  # the second Ctrl-C: no more waiting
        self.stopping = True

    def run(self, ready: Callable[[], bool] | None = None, on_ready: Callable[[], None] | None = None,
            ready_timeout: float = defaults.READY_TIMEOUT_SECONDS) -> int:
        """Supervise until a stop is asked for or a child ends; `on_ready` is called once, the
        first time `ready()` is true (polled every half second; a failure after `ready_timeout`
        stops everything)."""
        old = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        rc = 0
        t0 = next_check = time.monotonic()
        try:
            while not self.stopping:
                rc = self._reap() or rc
                if not self.children:
                    break
                if ready is not None and time.monotonic() >= next_check:
                    next_check = time.monotonic() + 0.5
                    if ready():
                        ready = None
                        if on_ready is not None:
                            on_ready()
                    elif time.monotonic() - t0 > ready_timeout:
                        click.echo(f"not ready after {ready_timeout:.0f}s (see the messages above); stopping",
                                   err=True)
                        rc = 1
                        break
                time.sleep(0.1)
        finally:
            self.stop_all()
            for sig, h in old.items():
                signal.signal(sig, h)
        return rc

    def _reap(self) -> int:
        rc = 0
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
        return rc

    def stop_all(self) -> None:
        self.stopping = True
        procs = [p for (_, _, _, p) in self.children.values()]
        for p in procs:
            if p.poll() is None and not self.hurry:
                p.send_signal(signal.SIGTERM)  # rq: warm shutdown; gunicorn: graceful
        deadline = time.monotonic() + self.grace
        while not self.hurry and time.monotonic() < deadline and any(p.poll() is None for p in procs):
            time.sleep(0.05)
        for p in procs:
            self._kill(p)
        for p in procs:
            p.wait()

    def _kill(self, proc: subprocess.Popen) -> None:
        """SIGKILL the child and, when it leads its own group, everything still under it."""
        targets = [lambda: os.killpg(proc.pid, signal.SIGKILL)] if self.own_groups else []
        if proc.poll() is None:
            targets.append(proc.kill)
        for kill in targets:
            try:
                kill()
            except (ProcessLookupError, PermissionError):
                pass
