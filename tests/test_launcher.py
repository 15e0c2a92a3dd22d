"""`verity up` as an operator runs it: a subprocess with embedded Redis, SQLite, gunicorn and a
real worker process; then a restart on the same data dir loses nothing."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from mediagen import face_image, jpeg_bytes
from waits import wait_for

from cli.embedded_redis import free_port

REPO = Path(__file__).resolve().parents[1]
AUTH: dict[str, str] = {}
"""The platform API key's header, set once `verity key create` made one (issue 5)."""


def _get(url: str, timeout: float = 5.0):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=AUTH), timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def _get_with(url: str, headers: dict[str, str]):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _post_file(url: str, data: bytes, name: str = "face.jpg"):
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}", **AUTH})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, json.loads(r.read())


def _start_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "VERITY_DATA_DIR")}


def _start(data_dir: Path, port: int) -> subprocess.Popen:
    env = _start_env()
    return subprocess.Popen([sys.executable, "-m", "cli", "up", "--data-dir", str(data_dir),
                             "--port", str(port), "--workers", "1"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError("verity up did not stop within 60 s:\n" + out[-3000:])
    return out


def test_verity_up_serves_the_page_analyses_and_survives_a_restart(tmp_path, shared_detector):
    data_dir = tmp_path / "var"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _start(data_dir, port)
    try:
        wait_for(lambda: _get(base + "/readyz")[0] == 200 if proc.poll() is None else pytest.fail("exited"),
              90, "/readyz to turn 200")
        status, page = _get(base + "/")
        assert status == 200 and b'id="dropzone"' in page
        key = subprocess.run([sys.executable, "-m", "cli", "key", "create", "launcher", "--show-score",
                              "--data-dir", str(data_dir)], cwd=REPO, capture_output=True, text=True,
                             env=_start_env(), check=True).stdout.strip().splitlines()[-1]
        AUTH["Authorization"] = f"Bearer {key}"
        status, body = _post_file(base + "/api/v1/uploads", jpeg_bytes(face_image((800, 600), 400)))
        assert status == 202
        uid = body["id"]

        def verdict():
            _, b = _get(f"{base}/api/v1/uploads/{uid}")
            d = json.loads(b)
            return d if d["status"] not in ("queued", "analyzing") else None

        first = wait_for(verdict, 60, "a verdict")
        assert first["analysis"]["label"] in ("likely_authentic", "suspected_fake")
        # /metrics is the operator's: `verity up` made a token (0600) in the data dir
        assert _get(base + "/metrics")[0] == 401
        token = (data_dir / "ops_token").read_text().strip()
        status, metrics = _get_with(base + "/metrics", {"Authorization": f"Bearer {token}"})
        assert status == 200 and b"verity_uploads_accepted_total" in metrics
        # the data dir holds password hashes and webhook secrets: its owner's only
        assert data_dir.stat().st_mode & 0o777 == 0o700
        for name in ("verity.db", "secret_key", "ops_token", "redis.url"):
            assert (data_dir / name).stat().st_mode & 0o077 == 0, name
        assert (data_dir / "redis").stat().st_mode & 0o077 == 0
    finally:
        out = _stop(proc)
    assert proc.returncode == 0, out[-3000:]
    assert "Verity is up: http://127.0.0.1:" in out and "Verity stopped." in out
    assert not (data_dir / "redis.url").exists()

    proc = _start(data_dir, port)
    try:
        wait_for(lambda: _get(base + "/healthz")[0] == 200 if proc.poll() is None else pytest.fail("exited"),
              60, "restart")
        again = json.loads(_get(f"{base}/api/v1/uploads/{uid}")[1])
        assert again["status"] == first["status"] and again["analysis"]["score"] == first["analysis"]["score"]
    finally:
        out = _stop(proc)
    assert proc.returncode == 0, out[-3000:]


def test_doctor_says_what_is_wrong(tmp_path):
    from cli import main

    r = CliRunner().invoke(main, ["doctor", "--data-dir", str(tmp_path)],
                           env={"REDIS_URL": "", "DATABASE_URL": "", "VERITY_MODEL": str(tmp_path / "nope")})
    assert r.exit_code == 1
    assert "[FAIL] database" in r.output and "verity db upgrade" in r.output
    assert "[FAIL] redis" in r.output and "verity up" in r.output
    assert "[FAIL] model" in r.output
    assert "[ok  ] storage" in r.output and "[ok  ] providers" in r.output


def test_doctor_passes_on_a_working_setup(settings, shared_detector):
    from cli import main

    env = {"REDIS_URL": settings.redis_url, "DATABASE_URL": settings.database_url}
    r = CliRunner().invoke(main, ["doctor", "--data-dir", str(settings.data_dir)], env=env)
    assert "[ok  ] database" in r.output and "[ok  ] redis" in r.output and "[ok  ] model" in r.output, r.output
    assert r.exit_code == 0, r.output


def test_verity_worker_n2_processes_the_queue_in_separate_processes(app, client, settings):
    """`verity worker -n 2 --burst`: two real worker processes, each with its own detector."""
    import io

    from mediagen import no_face_image

    ids = []
    for i in range(3):
        data = jpeg_bytes(no_face_image((640 + i * 16, 480)))
        r = client.post("/api/v1/uploads", data={"file": (io.BytesIO(data), f"{i}.jpg")},
                        content_type="multipart/form-data")
        assert r.status_code == 202
        ids.append(r.get_json()["id"])
    env = {**os.environ, "REDIS_URL": settings.redis_url, "DATABASE_URL": settings.database_url,
           "VERITY_DATA_DIR": str(settings.data_dir), "VERITY_LOG_LEVEL": "WARNING"}
    out = subprocess.run([sys.executable, "-m", "cli", "worker", "-n", "2", "--burst"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=180, check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    for uid in ids:
        body = client.get(f"/api/v1/uploads/{uid}").get_json()
        assert body["status"] == "cleared" and body["analysis"]["label"] == "no_face", body


def test_worker_with_a_missing_model_says_so(settings, tmp_path):
    from cli import main

    env = {"REDIS_URL": settings.redis_url, "DATABASE_URL": settings.database_url,
           "VERITY_MODEL": str(tmp_path / "no-such-model")}
    r = CliRunner().invoke(main, ["worker", "--burst", "--data-dir", str(settings.data_dir)], env=env)
    assert r.exit_code == 1
    assert "the detector cannot start" in r.output and "no-such-model" in r.output


def test_worker_layout_shares_the_cpus_out(tmp_path, monkeypatch):
    """`auto` on a CPU host: one single-threaded worker per CPU (capped); N workers share the
    CPUs out as onnxruntime threads instead of each taking them all; VERITY_ORT_THREADS wins."""
    from cli.worker import worker_layout
    from core import defaults
    from core.settings import load_settings
    from detector import runtime

    monkeypatch.setattr(runtime, "cpu_threads", lambda: 8)
    cpu = load_settings(env={"VERITY_DEVICE": "cpu"}, data_dir=tmp_path, make_secret=False)
    assert worker_layout(cpu, "auto") == (min(8, defaults.AUTO_WORKERS_MAX), 8 // min(8, defaults.AUTO_WORKERS_MAX))
    assert worker_layout(cpu, 1) == (1, 8)
    assert worker_layout(cpu, 3) == (3, 2)
    assert worker_layout(cpu, 16) == (16, 1)
    assert worker_layout(cpu.with_(ort_threads=4), 2) == (2, 4)
    monkeypatch.setattr(runtime, "cpu_threads", lambda: 1)
    assert worker_layout(cpu, "auto") == (1, 1)
    cuda = cpu.with_(device="cuda")
    assert worker_layout(cuda, "auto")[0] == 1  # one worker per GPU
    with pytest.raises(Exception, match="VERITY_ORT_THREADS"):
        load_settings(env={"VERITY_ORT_THREADS": "0"}, data_dir=tmp_path, make_secret=False)


def test_each_worker_reports_the_threads_it_runs_with(settings, shared_detector, redis_conn):
    """The detector is built with the settings' thread count, and the worker's record (which
    /readyz and `verity doctor` read) says so."""
    from workers.context import WorkerContext
    from workers.worker import DetectorWorker

    ctx = WorkerContext(settings.with_(ort_threads=1))
    worker = DetectorWorker(context=ctx)
    assert worker.detector.threads == 1
    assert worker.detector.classifier.session.get_session_options().intra_op_num_threads == 1
    assert worker.info()["threads"] == 1


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _redis_servers_on(data_dir: Path) -> list[int]:
    """Live redis-servers working in the data dir's Redis folder (their working directory)."""
    rdir = str((data_dir / "redis").resolve())
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                exe = (d / "cmdline").read_bytes().split(b"\0")[0]
                cwd = os.readlink(d / "cwd")
            except OSError:
                continue
            if b"redis-server" in exe and cwd == rdir and _alive(int(d.name)):
                out.append(int(d.name))
    return out


def test_a_hard_killed_launcher_leaves_nothing_running_and_the_next_one_starts_clean(tmp_path, shared_detector):
    """`kill -9` of `verity up` left its Redis (own session) running, and the next `verity up` on
    the same data dir started a second redis-server on the same AOF directory. Now every child
    dies with the launcher (PR_SET_PDEATHSIG), and a Redis left over all the same is stopped."""
    data_dir = tmp_path / "var"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _start(data_dir, port)
    wait_for(lambda: _get(base + "/readyz")[0] == 200 if proc.poll() is None else pytest.fail("exited"),
             90, "/readyz to turn 200")
    [redis_pid] = _redis_servers_on(data_dir)
    proc.kill()  # SIGKILL: no handler runs, nothing is stopped by the launcher itself
    proc.wait()
    wait_for(lambda: not _alive(redis_pid) and not _redis_servers_on(data_dir), 30, "the orphaned Redis to stop")
    wait_for(lambda: _get(base + "/healthz", timeout=1)[0] == 0, 30, "the web server to let go of its port")
    proc = _start(data_dir, port)
    try:
        wait_for(lambda: _get(base + "/readyz")[0] == 200 if proc.poll() is None else pytest.fail("exited"),
                 90, "/readyz to turn 200 again")
        assert len(_redis_servers_on(data_dir)) == 1
    finally:
        out = _stop(proc)
    assert proc.returncode == 0, out[-3000:]
    assert _redis_servers_on(data_dir) == []


def test_a_redis_left_running_on_the_data_dir_is_stopped_before_another_starts(tmp_path):
    """Never two redis-servers on one AOF directory: a left-over one (its launcher gone) is
    stopped, its AOF written out, before the next one starts."""
    from cli import embedded_redis

    first, url = embedded_redis.start(tmp_path)
    from redis import Redis

    Redis.from_url(url).set("kept", "1")
    second, url2 = embedded_redis.start(tmp_path)  # as the next `verity up` would
    try:
        assert first.wait(20) is not None  # the first one was stopped
        assert _redis_servers_on(tmp_path) == [second.pid]
        assert Redis.from_url(url2).get("kept") == b"1"  # its AOF carried the data over
    finally:
        embedded_redis.stop(second, tmp_path)


def test_a_second_launcher_on_the_same_data_dir_is_refused(tmp_path):
    from cli import main
    from cli.supervisor import hold_data_dir

    lock = hold_data_dir(tmp_path)
    try:
        r = CliRunner().invoke(main, ["up", "--data-dir", str(tmp_path)], env={"REDIS_URL": "", "DATABASE_URL": ""})
    finally:
        lock.close()
    assert r.exit_code == 1 and "another `verity up`" in r.output and str(os.getpid()) in r.output


def _descendants(pid: int) -> set[int]:
    """Every process under `pid` now (children, grandchildren...), from /proc."""
    parents: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class _Uploader:
    """Uploads photos as fast as it can until stopped; remembers what was accepted (202)."""

    def __init__(self, base: str):
        import threading

        self.base, self.accepted, self.stop = base, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                status, body = _post_file(self.base + "/api/v1/uploads", jpeg_bytes(face_image((640 + i % 50, 480), 300)))
                if status == 202:
                    self.accepted.append(body["id"])
            except (OSError, ValueError, http.client.HTTPException):
                continue  # the server is going away: that is the point


@pytest.mark.parametrize("cycles", [int(os.environ.get("VERITY_LAUNCHER_CYCLES", "3"))])
def test_ctrl_c_stops_everything_every_time_and_loses_no_accepted_upload(tmp_path, shared_detector, cycles):
    """`verity up` started and stopped again and again on one data dir, each Ctrl-C while uploads
    are arriving: within 10 s nothing of it runs and the port is free; 'Verity is up' comes only
    once /readyz answers; after a last start every upload that got a 202 has its verdict.
    (VERITY_LAUNCHER_CYCLES=N for more cycles.)"""
    data_dir = tmp_path / "var"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    accepted: list[str] = []
    AUTH.clear()  # this data dir's own key, made at the first start
    for cycle in range(cycles + 1):
        proc = _start(data_dir, port)
        line = ""
        while "Verity is up" not in line:
            line = proc.stdout.readline()
            assert line, f"verity up ended before it was up (cycle {cycle})"
        assert _get(base + "/readyz")[0] == 200  # it said so only once it was so
        if not AUTH:
            key = subprocess.run([sys.executable, "-m", "cli", "key", "create", "ctrl-c", "--rate-limit",
                                  "100000/minute", "--data-dir", str(data_dir)],
                                 cwd=REPO, capture_output=True, text=True, env=_start_env(), check=True)
            AUTH["Authorization"] = f"Bearer {key.stdout.strip().splitlines()[-1]}"
        if cycle == cycles:
            break
        uploader = _Uploader(base)
        uploader.thread.start()
        wait_for(lambda u=uploader: len(u.accepted) >= 2, 30, "uploads to be accepted")
        tree = _descendants(proc.pid)
        assert len(tree) >= 4, tree  # redis, web (+ its workers), detector worker, webhook worker
        t0 = time.monotonic()
        out = _stop(proc)  # SIGINT, as a Ctrl-C, in the middle of the uploads
        took = time.monotonic() - t0
        uploader.stop.set()
        uploader.thread.join(15)
        accepted += uploader.accepted
        assert proc.returncode == 0, out[-2000:]
        assert took < 12, f"cycle {cycle}: stopped in {took:.1f} s"
        alive = [p for p in tree if _alive(p)]
        assert not alive, f"cycle {cycle}: still running after the stop: {alive}"
        assert _port_free(port), f"cycle {cycle}: port {port} still bound"
        assert _redis_servers_on(data_dir) == []

    def all_decided():
        answers = [_get(f"{base}/api/v1/uploads/{u}") for u in accepted]
        assert all(code == 200 for code, _ in answers), [a for a in answers if a[0] != 200][:3]
        return all(json.loads(body)["status"] not in ("queued", "analyzing") for _, body in answers)

    try:
        wait_for(all_decided, 120, f"verdicts for the {len(accepted)} accepted uploads")
    except AssertionError as e:
        stuck = _where_are(base, data_dir, accepted)
        out = _stop(proc)
        raise AssertionError(f"{e}\nundecided uploads: {stuck}\nlast output:\n{out[-4000:]}") from None
    else:
        _stop(proc)


def _where_are(base: str, data_dir: Path, upload_ids: list[str]) -> list[dict]:
    """For a failure message: each undecided upload's status and what RQ knows of its job."""
    from redis import Redis
    from rq.job import Job

    redis = Redis.from_url((data_dir / "redis.url").read_text().strip())
    keys = sorted(k.decode() for k in redis.keys("rq:*") if b"registry" in k or b"lock" in k)
    found = []
    for uid in upload_ids:
        body = json.loads(_get(f"{base}/api/v1/uploads/{uid}")[1] or b"{}")
        if body.get("status") not in ("queued", "analyzing"):
            continue
        try:
            job = Job.fetch(uid, connection=redis, serializer="json")
            rq = {"job": job.get_status(refresh=True), "worker": job.worker_name, "retries_left": job.retries_left,
                  "ended_at": str(job.ended_at), "exc": (job.exc_info or "")[-300:]}
        except Exception as e:  # noqa: BLE001 - a diagnosis reports whatever it finds
            rq = {"job": f"none ({type(e).__name__})"}
        found.append({"id": uid, "status": body.get("status"), "updated_at": body.get("updated_at"), **rq,
                      "rq_keys": keys})
    return found


def test_a_second_ctrl_c_stops_at_once(tmp_path, shared_detector):
    data_dir = tmp_path / "var"
    port = free_port()
    proc = _start(data_dir, port)
    while "Verity is up" not in (line := proc.stdout.readline()):
        assert line, "verity up ended before it was up"
    tree = _descendants(proc.pid)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 5
    wait_for(lambda: not [p for p in tree if _alive(p)], 10, "every child to be gone")
    assert _port_free(port)


def test_a_port_in_use_is_one_clear_line(tmp_path):
    import socket

    from cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = CliRunner().invoke(main, ["up", "--data-dir", str(tmp_path), "--port", str(port)],
                               env={"REDIS_URL": "", "DATABASE_URL": ""})
    assert r.exit_code == 1
    assert f"port {port} on 127.0.0.1 is in use" in r.output and "--port" in r.output
    assert not (tmp_path / "redis").exists()  # nothing was started
