"""Sustained upload load against a real `verity up` on loopback, at increasing rates.

    python bench/load.py                      # defaults: 2 workers, rates 2 5 10 20 40 /s, 12 s each
    python bench/load.py --rates 5 10 --step-seconds 8 --workers 1

Starts `verity up` (embedded Redis, SQLite, gunicorn, real detector workers) in a temp data dir,
creates an API key, then drives an open-loop stream of small real-face JPEGs (distinct bytes,
so nothing is reused) at each rate in turn and reports per step: offered and accepted uploads/s,
p50/p95/p99 upload latency, 503 (back-pressure), 429 and other errors, the analysis queue depth
over time and verdicts/s; then the time the workers need to drain what was accepted, and the
knee: the first step where back-pressure (503 + Retry-After) starts, or where accepted/s falls
below what was offered. Everything is bounded: each step's length, the drain wait, and a hard
deadline (--deadline) after which the run stops and reports what it has.

The baseline named in the output is the offered rate: accepted/s and verdicts/s are printed as a
ratio of it, measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import http.client
import io
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FACES = REPO.parent / "shared" / "data" / "faces-london" / "neutral_front"


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{cores} cores ({model}), {platform.system()} {platform.release()}, Python {platform.python_version()}, load avg {load}"


def tiny_model(directory: Path) -> str:
    """A real ONNX classifier for when no model is shipped yet (face detection stays RetinaFace)."""
    import onnx
    from onnx import TensorProto, helper

    directory.mkdir(parents=True, exist_ok=True)
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])
    out = helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["N", 1])
    axes = helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 1])
    graph = helper.make_graph([helper.make_node("ReduceMean", ["input", "axes"], ["m"], keepdims=1),
                               helper.make_node("Reshape", ["m", "shape"], ["logit"])],
                              "tiny", [inp], [out], initializer=[axes, shape])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    onnx.save(m, directory / "model.onnx")
    sha = hashlib.sha256((directory / "model.onnx").read_bytes()).hexdigest()
    (directory / "model.json").write_text(json.dumps({"name": "bench-tiny", "version": "0.0.1", "sha256": sha,
                                                      "input": {"size": 32},
                                                      "thresholds": {"review": 0.5, "block": 0.9}}))
    return str(directory)


def pick_model(tmp: Path) -> tuple[str, str]:
    sys.path.insert(0, str(REPO))
    from detector.manifest import ManifestError, load_manifest, resolve_model_dir

    try:
        path = resolve_model_dir(None)
        m = load_manifest(path)
        return str(path), f"{m.name} {m.version}"
    except (ManifestError, OSError):
        return tiny_model(tmp / "tiny-model"), "bench-tiny 0.0.1 (no shipped model found: a real ONNX stand-in)"


def face_jpegs(n: int, size=(480, 360), face_height: int = 260) -> list[bytes]:
    from PIL import Image

    srcs = sorted(FACES.glob("*.jpg"))[:8]
    if not srcs:
        raise SystemExit(f"no face photos at {FACES} (../shared/data beside the repository)")
    bases = []
    for p in srcs:
        im = Image.open(p).convert("RGB")
        im = im.resize((round(im.width * face_height / im.height), face_height))
        canvas = Image.new("RGB", size, (96, 110, 120))
        canvas.paste(im, ((size[0] - im.width) // 2, (size[1] - im.height) // 2))
        bases.append(canvas)
    out = []
    for i in range(n):
        im = bases[i % len(bases)].copy()
        im.putpixel((i % size[0], (i // size[0]) % 4), (i % 256, (i // 256) % 256, 3))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=88)
        out.append(buf.getvalue())
    return out


class Service:
    def __init__(self, data: Path, port: int, workers: int, env: dict[str, str]):
        self.data, self.port = data, port
        self.log = open(data.parent / "verity-up.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "cli", "up", "--data-dir", str(data),
                                      "--port", str(port), "--workers", str(workers)],
                                     cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read()
        except (OSError, http.client.HTTPException):
            return 0, b""

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"verity up exited with {self.proc.returncode}; see {self.log.name}")
            if self.get("/readyz")[0] == 200:
                return
            time.sleep(0.5)
        raise SystemExit(f"verity up not ready within {timeout:.0f}s; see {self.log.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(45)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


def post(port: int, key: str, data: bytes) -> tuple[int, float, str]:
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="face.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    t0 = time.perf_counter()
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("POST", "/api/v1/uploads", body=body,
                  headers={"Authorization": f"Bearer {key}",
                           "Content-Type": f"multipart/form-data; boundary={boundary}"})
        r = c.getresponse()
        r.read()
        retry_after = r.headers.get("Retry-After", "")
        c.close()
        return r.status, time.perf_counter() - t0, retry_after
    except (OSError, http.client.HTTPException) as e:
        return 0, time.perf_counter() - t0, type(e).__name__


class Sampler(threading.Thread):
    """Queue depth and finished analyses every 0.5 s (Redis and the SQLite record)."""

    def __init__(self, data: Path, queue_name: str):
        super().__init__(daemon=True)
        from redis import Redis
        from sqlalchemy import create_engine

        self.redis = Redis.from_url((data / "redis.url").read_text().strip())
        self.engine = create_engine(f"sqlite:///{data / 'verity.db'}")
        self.queue_key = f"rq:queue:{queue_name}"
        self.samples: list[tuple[float, int, int, int]] = []  # t, queue depth, pending rows, done rows
        self.stop_event = threading.Event()
        self.skipped = ""

    def counts(self) -> tuple[int, int, int]:
        from sqlalchemy import text

        try:
            depth = int(self.redis.llen(self.queue_key))
        except Exception:  # noqa: BLE001 - a sample is skipped, never fatal
            depth = -1
        with self.engine.connect() as c:
            pending = c.execute(text("SELECT count(*) FROM uploads WHERE status IN ('queued','analyzing')")).scalar()
            total = c.execute(text("SELECT count(*) FROM uploads")).scalar()
        return depth, pending, total - pending

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.samples.append((time.monotonic(), *self.counts()))
            except Exception as e:  # noqa: BLE001 - SQLite busy: skip this sample
                self.skipped = f"{type(e).__name__}: {e}"[:200]
            self.stop_event.wait(0.5)


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p / 100 * len(xs) + 0.5) - 1))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", type=float, nargs="+", default=[2, 5, 10, 20, 40])
    ap.add_argument("--step-seconds", type=float, default=12.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-queue-depth", type=int, default=60,
                    help="VERITY_API_MAX_QUEUE_DEPTH for the run: back-pressure bound (default 60, so the knee shows)")
    ap.add_argument("--drain-seconds", type=float, default=45.0)
    ap.add_argument("--deadline", type=float, default=175.0, help="hard bound on the whole run (s)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    started = time.monotonic()
    hard_deadline = started + args.deadline
    from cli.embedded_redis import free_port

    tmp = Path(tempfile.mkdtemp(prefix="verity-load-"))
    data = tmp / "data"
    model_path, model_desc = pick_model(tmp)
    n_files = int(sum(r * args.step_seconds for r in args.rates)) + 10
    files = face_jpegs(n_files)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERITY_") and k not in ("REDIS_URL", "DATABASE_URL")}
    env.update({"VERITY_MODEL": model_path, "VERITY_API_MAX_QUEUE_DEPTH": str(args.max_queue_depth),
                "VERITY_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"})
    port = free_port()
    print(f"Verity load benchmark, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}")
    print(f"machine: {machine()}")
    print(f"model: {model_desc}; workers: {args.workers}; back-pressure bound: {args.max_queue_depth} queued jobs; "
          f"{len(files)} distinct real-face JPEGs ({statistics.mean(map(len, files)) / 1024:.0f} KiB avg, 480x360)")
    svc = Service(data, port, args.workers, env)
    rows = []
    sampler = None
    try:
        svc.wait_ready(90)
        key = subprocess.run([sys.executable, "-m", "cli", "key", "create", "bench", "--data-dir", str(data),
                              "--rate-limit", "100000/minute"], cwd=REPO, env=env, capture_output=True,
                             text=True, check=True).stdout.strip().splitlines()[-1]
        sampler = Sampler(data, "verity-analyze")
        sampler.start()
        pool = ThreadPoolExecutor(max_workers=48)
        i = 0
        for rate in args.rates:
            if time.monotonic() + args.step_seconds + 10 > hard_deadline:
                print(f"(stopping before {rate}/s: the run's deadline is near)")
                break
            n = int(rate * args.step_seconds)
            t0 = time.monotonic()
            futures = []
            for k in range(n):
                delay = t0 + k / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                futures.append(pool.submit(post, port, key, files[i % len(files)]))
                i += 1
            results = [f.result(timeout=60) for f in futures]
            t1 = time.monotonic()
            lat = [r[1] for r in results if r[0] == 202]
            codes: dict[int, int] = {}
            for status, _, _ in results:
                codes[status] = codes.get(status, 0) + 1
            window = [s for s in sampler.samples if t0 <= s[0] <= t1]
            done_rate = ((window[-1][3] - window[0][3]) / (window[-1][0] - window[0][0])
                         if len(window) > 1 and window[-1][0] > window[0][0] else float("nan"))
            rows.append({
                "offered_per_s": rate, "sent": n, "seconds": round(t1 - t0, 1),
                "accepted_per_s": round(codes.get(202, 0) / (t1 - t0), 2),
                "p50_ms": round(pct(lat, 50) * 1000), "p95_ms": round(pct(lat, 95) * 1000),
                "p99_ms": round(pct(lat, 99) * 1000),
                "rejected_503": codes.get(503, 0), "rejected_429": codes.get(429, 0),
                "errors": sum(v for c, v in codes.items() if c not in (202, 503, 429)),
                "retry_after": sorted({r[2] for r in results if r[0] == 503}),
                "queue_max": max((s[1] for s in window), default=-1),
                "queue_end": window[-1][1] if window else -1,
                "verdicts_per_s": round(done_rate, 2),
            })
        send_end = time.monotonic()
        drain_s = None
        while time.monotonic() < min(send_end + args.drain_seconds, hard_deadline):
            if sampler.samples and sampler.samples[-1][0] > send_end and sampler.samples[-1][2] == 0:
                drain_s = round(sampler.samples[-1][0] - send_end, 1)
                break
            time.sleep(0.5)
        final = sampler.counts()
    finally:
        if sampler is not None:
            sampler.stop_event.set()
        svc.stop()
    print()
    hdr = (f"{'offered/s':>9} {'accepted/s':>10} {'ratio':>5} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
           f"{'503':>4} {'429':>4} {'err':>4} {'queue max':>9} {'queue end':>9} {'verdicts/s':>10}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['offered_per_s']:>9g} {r['accepted_per_s']:>10.2f} {r['accepted_per_s'] / r['offered_per_s']:>5.2f} "
              f"{r['p50_ms']:>7} {r['p95_ms']:>7} {r['p99_ms']:>7} {r['rejected_503']:>4} {r['rejected_429']:>4} "
              f"{r['errors']:>4} {r['queue_max']:>9} {r['queue_end']:>9} {r['verdicts_per_s']:>10.2f}")
    knee_bp = next((r["offered_per_s"] for r in rows if r["rejected_503"]), None)
    knee_acc = next((r["offered_per_s"] for r in rows if r["accepted_per_s"] < 0.9 * r["offered_per_s"]), None)
    sustained = max((r["verdicts_per_s"] for r in rows if r["verdicts_per_s"] == r["verdicts_per_s"]), default=0)
    print()
    print(f"back-pressure (503 + Retry-After {rows[-1]['retry_after'] if rows else []}) starts at: "
          f"{f'{knee_bp:g}/s offered' if knee_bp else 'not reached'}")
    print(f"accepted/s below 90% of offered from: {f'{knee_acc:g}/s' if knee_acc else 'never'}")
    print(f"analysis throughput (best step): {sustained:.2f} verdicts/s with {args.workers} worker(s)")
    print(f"time to drain after the last upload: {f'{drain_s} s' if drain_s is not None else f'not drained within {args.drain_seconds:.0f} s'}"
          f" (queue depth, pending rows, finished rows at the end: {final})")
    print(f"queue depth over time (every ~5 s): {[s[1] for s in (sampler.samples if sampler else [])][::10]}")
    print(f"total run: {time.monotonic() - started:.0f} s; data dir {tmp}")
    if args.json:
        args.json.write_text(json.dumps({"date": dt.datetime.now(dt.UTC).isoformat(), "machine": machine(),
                                         "model": model_desc, "workers": args.workers, "steps": rows,
                                         "drain_s": drain_s, "knee_backpressure": knee_bp,
                                         "knee_accepted": knee_acc}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
