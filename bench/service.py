"""Service benchmark: what the web, the queue and the records cost on top of the detector.

One run, one printed table, every figure against a baseline measured in the same run:

1. ingest      small-image uploads/s accepted by `verity web` (gunicorn) with no worker running
               (target >= 300/s on 2 cores);
2. end to end  items/s through web + Redis/RQ + the detector workers as `verity up` starts them
               (`--workers auto`: one single-threaded worker per core here), against the
               detector's own in-process throughput on the same files, one process with every
               core (target >= 85%); CPU per item of each side is printed beside it, and
               the same analysis in-process with what the worker adds to the detector's
               (the known-fakes bank's perceptual hashes, the file's provenance) as a
               diagnostic: how much of the gap is that work, how much the bookkeeping;
3. latency     upload-to-verdict p50 for one 1080p photo on an idle system, against the
               detector's own time on that photo (target <= detector + 60 ms).

    python bench/service.py [--ingest 600] [--items 24] [--latency-runs 10] [--workers auto|N]

Needs the shipped model (or VERITY_MODEL) and real face photos in ../shared/data/faces-london.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image
from redis import Redis
from rq import Queue

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from core import defaults

FACES = REPO.parent / "shared" / "data" / "faces-london" / "neutral_front"


# --- media --------------------------------------------------------------------------------

def jpeg(im: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def small_images(n: int, seed: int = 0) -> list[bytes]:
    """Distinct 320x240 JPEGs (about 10 kB): the ingest path's per-request cost, not bandwidth."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(240, 320, 3), dtype=np.uint8)
    out = []
    for i in range(n):
        a = base.copy()
        a[0, :8, 0] = np.frombuffer(i.to_bytes(8, "little"), dtype=np.uint8)
        out.append(jpeg(Image.fromarray(a), 80))
    return out


def face_scene(path: Path, size: tuple[int, int], face_height: int, tag: int) -> bytes:
    src = Image.open(path).convert("RGB")
    scale = face_height / src.height
    src = src.resize((round(src.width * scale), face_height), Image.BILINEAR)
    canvas = Image.new("RGB", size, (96, 110, 120 + tag % 100))
    canvas.paste(src, ((size[0] - src.width) // 2, (size[1] - src.height) // 2))
    return jpeg(canvas)


# --- HTTP ---------------------------------------------------------------------------------

class Client:
    """Keep-alive HTTP client, one per thread."""

    headers: ClassVar[dict[str, str]] = {}
    """Authorization for the platform API, set once a key exists."""

    def __init__(self, port: int):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def _request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        """One request; a keep-alive connection the server closed while idle is opened again."""
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body, headers={**(headers or {}), **self.headers})
                return self.conn.getresponse()
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def upload_raw(self, data: bytes, mime: str = "image/jpeg") -> dict:
        """The platform API's other form: the media as the request body (no multipart parsing)."""
        r = self._request("POST", "/api/v1/uploads", data, {"Content-Type": mime})
        payload = json.loads(r.read())
        if r.status != 202:
            raise RuntimeError(f"upload answered {r.status}: {payload}")
        return payload

    def upload(self, data: bytes, name: str = "x.jpg") -> dict:
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        r = self._request("POST", "/api/v1/uploads", body,
                          {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        payload = json.loads(r.read())
        if r.status != 202:
            raise RuntimeError(f"upload answered {r.status}: {payload}")
        return payload

    def get(self, path: str) -> tuple[int, dict]:
        r = self._request("GET", path)
        return r.status, json.loads(r.read())


# --- processes ----------------------------------------------------------------------------

class Service:
    def __init__(self, data_dir: Path):
        from cli import embedded_redis
        from core.db import upgrade

        self.data_dir = data_dir
        self.redis_proc, self.redis_url = embedded_redis.start(data_dir, aof=True)
        self.db_url = f"sqlite:///{data_dir / 'verity.db'}"
        upgrade(self.db_url)
        self._api_key()
        self.env = {**os.environ, "VERITY_DATA_DIR": str(data_dir), "REDIS_URL": self.redis_url,
                    "DATABASE_URL": self.db_url, "VERITY_LOG_LEVEL": "WARNING"}
        self.web = self.worker = None
        self.port = 0
        self.web_processes = defaults.WEB_WORKERS

    def _api_key(self) -> None:
        """A platform API key without a rate limit that matters here (the API needs a Bearer key)."""
        try:
            from core.clients import create_client
        except ImportError:  # before the platform-API issue: the API is open
            return
        from core.db import Database

        db = Database(self.db_url)
        with db.session() as s:
            key = create_client(s, "bench", rate_limit="1000000/minute", show_score=True).key
        db.dispose()
        Client.headers = {"Authorization": f"Bearer {key}"}

    def start_web(self) -> None:
        from cli.embedded_redis import free_port

        self.port = free_port()
        self.web = subprocess.Popen([sys.executable, "-m", "cli", "web", "--port", str(self.port),
                                     "--processes", str(self.web_processes)],
                                    env=self.env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if Client(self.port).get("/healthz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("web did not start")

    def start_worker(self, workers: str) -> str:
        """`verity worker -n <workers>` as `verity up` starts it; returns the layout it chose."""
        self.worker = subprocess.Popen([sys.executable, "-m", "cli", "worker", "-n", workers], env=self.env,
                                       cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from cli.worker import worker_layout
        from core.settings import load_settings

        expected, _ = worker_layout(load_settings(env=self.env, make_secret=False),
                                    workers if workers == "auto" else int(workers))
        conn = Redis.from_url(self.redis_url)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            infos = [json.loads(v) for k in conn.keys("verity:worker-info:*") if (v := conn.get(k))]
            if len(infos) >= expected:
                return f"{len(infos)} process(es) x {infos[0].get('threads', '?')} onnxruntime thread(s)"
            time.sleep(0.2)
        raise RuntimeError("worker did not become ready")

    def wait_terminal(self, client: Client, ids: list[str], poll: float) -> dict[str, float]:
        """Upload id -> wall-clock time (time.time()) its verdict was committed, read from the
        record's updated_at: exact whatever the polling interval, so polling can stay gentle and
        not steal the cores being measured."""
        done: dict[str, float] = {}
        pending = list(ids)
        while pending:
            nxt = []
            for i in pending:
                _, b = client.get(f"/api/v1/uploads/{i}")
                if b["status"] in ("queued", "analyzing"):
                    nxt.append(i)
                else:
                    done[i] = datetime.fromisoformat(b["updated_at"]).timestamp()
            pending = nxt
            if pending:
                time.sleep(poll)
        return done

    def stop(self) -> None:
        from cli import embedded_redis

        for p in (self.worker, self.web):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
        embedded_redis.stop(self.redis_proc, self.data_dir)


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(d.name))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes and their children (Linux /proc), in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    seen = set()
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
        todo += _children(pid)
    return total


# --- phases -------------------------------------------------------------------------------

def bench_ingest(svc: Service, n: int, concurrency: int, raw: bool = False) -> tuple[float, float]:
    """(uploads/s, server CPU ms per upload: gunicorn processes + Redis)."""
    images = small_images(n, seed=1 if raw else 0)
    local = threading.local()

    def one(data: bytes) -> None:
        if not hasattr(local, "c"):
            local.c = Client(svc.port)
        if raw:
            local.c.upload_raw(data)
        else:
            local.c.upload(data)

    with ThreadPoolExecutor(concurrency) as ex:  # warm the connections and the web processes
        list(ex.map(one, small_images(concurrency * 2)[:concurrency]))
        pids = [svc.web.pid, svc.redis_proc.pid]
        cpu0 = cpu_seconds(pids)
        t = time.perf_counter()
        list(ex.map(one, images))
        rate = n / (time.perf_counter() - t)
        return rate, (cpu_seconds(pids) - cpu0) / n * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ingest", type=int, default=600, help="small uploads for the ingest rate")
    ap.add_argument("--concurrency", type=int, default=8, help="client threads for ingest")
    ap.add_argument("--items", type=int, default=24, help="face photos for the end-to-end rate")
    ap.add_argument("--latency-runs", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved detector/service rounds")
    ap.add_argument("--web-processes", type=int, default=defaults.WEB_WORKERS)
    ap.add_argument("--workers", default="auto",
                    help="detector worker processes, as `verity up --workers` takes them (default auto)")
    ap.add_argument("--only-ingest", action="store_true", help="measure ingest only")
    args = ap.parse_args()

    if not FACES.is_dir():
        sys.exit(f"face photos not found at {FACES}")
    faces = sorted(FACES.glob("*.jpg"))
    from core.settings import load_settings
    from detector.pipeline import Detector
    from detector.provenance import read_provenance

    work = Path(tempfile.mkdtemp(prefix="verity-bench-"))
    files_dir = work / "files"
    files_dir.mkdir()
    # End-to-end set: 720p scenes with one face each (distinct bytes, so no reuse).
    e2e_files = []
    for i in range(args.items):
        p = files_dir / f"e2e-{i}.jpg"
        p.write_bytes(face_scene(faces[i % len(faces)], (1280, 720), 480, i))
        e2e_files.append(p)
    lat_files = []
    for i in range(args.latency_runs + 1):
        p = files_dir / f"lat-{i}.jpg"
        p.write_bytes(face_scene(faces[(i + 7) % len(faces)], (1920, 1080), 700, 1000 + i))
        lat_files.append(p)

    print("building the in-process detector (baseline) ...", file=sys.stderr)
    cfg = load_settings(make_secret=False)  # the same model and device the worker will load
    det = Detector(model=cfg.model, models_dir=cfg.models_dir, device=cfg.device, frames=cfg.frames,
                   spin=cfg.ort_spin)
    det.warmup()
    det.analyze_path(e2e_files[0])
    provider, model = det.provider, f"{det.model_name} {det.model_version}"

    svc = Service(work / "var")
    svc.web_processes = args.web_processes
    try:
        svc.start_web()
        print("ingest ...", file=sys.stderr)
        ingest_rate, ingest_cpu_ms = bench_ingest(svc, args.ingest, args.concurrency)
        raw_rate, raw_cpu_ms = bench_ingest(svc, args.ingest, args.concurrency, raw=True)
        cores = len(os.sched_getaffinity(0))
        if args.only_ingest:
            print(f"ingest: {ingest_rate:.0f} uploads/s ({args.web_processes} web processes, "
                  f"{args.concurrency} client threads); server CPU {ingest_cpu_ms:.2f} ms/upload "
                  f"= {cores * 1000 / ingest_cpu_ms:.0f}/s on {cores} free cores")
            return

        print("end to end ...", file=sys.stderr)
        # The ingest uploads are not part of this measure: drop their jobs so the worker starts idle.
        q = Queue(defaults.QUEUE_NAME, connection=Redis.from_url(svc.redis_url), serializer="json")
        dropped = q.empty()
        layout = svc.start_worker(args.workers)
        c = Client(svc.port)
        w = c.upload(lat_files[0].read_bytes())  # warm-up item through the whole path
        svc.wait_terminal(c, [w["id"]], 0.01)

        # Interleaved rounds (detector alone, then the same files through the service), so that a
        # change in the machine's load during the run biases neither side; rates are pooled.
        # A third side, also in-process: the analysis a worker makes of each item (the detector
        # with the bank's perceptual hashes from its decode, and what the file declares).
        det_s = svc_s = det_cpu = svc_cpu = full_s = full_cpu = 0.0
        service_pids = [svc.web.pid, svc.worker.pid, svc.redis_proc.pid]  # with their children
        chunks = [e2e_files[i::args.rounds] for i in range(args.rounds)]
        for chunk in chunks:
            t, cpu = time.perf_counter(), time.process_time()
            for p in chunk:
                det.analyze_path(p)
            det_s += time.perf_counter() - t
            det_cpu += time.process_time() - cpu
            t, cpu = time.perf_counter(), time.process_time()
            for p in chunk:
                det.analyze_path(p, hashes=True)
                read_provenance(p, "image")
            full_s += time.perf_counter() - t
            full_cpu += time.process_time() - cpu
            cpu = cpu_seconds(service_pids)
            t = time.time()
            ids = [c.upload(p.read_bytes())["id"] for p in chunk]
            # Times come from the records, so polling can be slow and cost the measured cores little.
            svc.wait_terminal(c, ids[-1:], 0.5)  # one worker, jobs in order: the last one is last
            done = svc.wait_terminal(c, ids, 0.5)
            svc_s += max(done.values()) - t
            svc_cpu += cpu_seconds(service_pids) - cpu
        det_rate, e2e_rate, full_rate = len(e2e_files) / det_s, len(e2e_files) / svc_s, len(e2e_files) / full_s

        print("latency ...", file=sys.stderr)
        det_lat, lat, in_worker = [], [], []
        for p in lat_files[1:]:  # paired: the detector alone, then the same photo through the service
            data = p.read_bytes()
            t = time.perf_counter()
            det.analyze_path(p)
            det_lat.append((time.perf_counter() - t) * 1000)
            time.sleep(0.2)  # idle system between runs
            t = time.time()
            uid = c.upload(data)["id"]
            done = svc.wait_terminal(c, [uid], 0.2)
            lat.append((done[uid] - t) * 1000)
            in_worker.append(c.get(f"/api/v1/uploads/{uid}")[1]["analysis"]["timings_ms"].get("total", 0.0))
    finally:
        svc.stop()
        shutil.rmtree(work, ignore_errors=True)

    det_p50, lat_p50 = statistics.median(det_lat), statistics.median(lat)
    n_e2e = len(e2e_files)
    rows = [
        ("ingest: small uploads accepted/s (no worker)", f"{ingest_rate:.0f}/s", "300/s",
         f"{ingest_rate / 300:.2f}x target", "PASS" if ingest_rate >= 300 else "FAIL"),
        ("ingest: server CPU per upload (web + Redis)", f"{ingest_cpu_ms:.2f} ms",
         f"<= {cores * 1000 / 300:.2f} ms", f"{cores * 1000 / ingest_cpu_ms:.0f}/s on {cores} free cores",
         "PASS" if cores * 1000 / ingest_cpu_ms >= 300 else "FAIL"),
        ("ingest, raw-body form (no multipart): accepted/s", f"{raw_rate:.0f}/s", "(informative)",
         f"{raw_cpu_ms:.2f} ms CPU = {cores * 1000 / raw_cpu_ms:.0f}/s on {cores} free cores", ""),
        ("detector in-process, items/s (baseline)", f"{det_rate:.2f}/s", "", "1.00", ""),
        ("  + bank hashes and provenance, in-process, items/s", f"{full_rate:.2f}/s", "(diagnostic)",
         f"{full_rate / det_rate:.1%}", ""),
        ("end to end web+queue+worker, items/s", f"{e2e_rate:.2f}/s", ">= 85% of detector",
         f"{e2e_rate / det_rate:.1%}", "PASS" if e2e_rate >= 0.85 * det_rate else "FAIL"),
        ("  end to end / the in-process analysis with hashes", "", "(diagnostic)",
         f"{e2e_rate / full_rate:.1%}", ""),
        ("CPU per item: detector alone / with hashes / service",
         f"{det_cpu / n_e2e * 1000:.0f} / {full_cpu / n_e2e * 1000:.0f} / {svc_cpu / n_e2e * 1000:.0f} ms",
         "(diagnostic)", f"{det_cpu / svc_cpu:.1%}", ""),
        ("detector time, 1080p photo, p50 (baseline)", f"{det_p50:.0f} ms", "", "", ""),
        ("service overhead per photo, median of pairs", f"{statistics.median(d - b for d, b in zip(lat, det_lat)):.0f} ms",
         "<= 60 ms", "", ""),
        ("  of which detector time inside the worker, p50", f"{statistics.median(in_worker):.0f} ms",
         "(diagnostic)", "", ""),
        ("upload-to-verdict, 1080p photo, p50", f"{lat_p50:.0f} ms", "<= detector + 60 ms",
         f"+{lat_p50 - det_p50:.0f} ms", "PASS" if lat_p50 <= det_p50 + 60 else "FAIL"),
    ]
    print(f"\nVerity service benchmark ({os.cpu_count()} CPUs, {provider}, model {model}; workers: {layout}; "
          f"{args.ingest} ingest uploads, {args.items} e2e items, {args.latency_runs} latency runs; "
          f"{dropped} ingest jobs dropped before the worker started; detector and service measured "
          f"in {args.rounds} interleaved rounds, latency paired per photo)")
    header = ("measure", "value", "target", "vs baseline/target", "")
    widths = [max(len(r[i]) for r in [*rows, header]) for i in range(5)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


if __name__ == "__main__":
    main()
