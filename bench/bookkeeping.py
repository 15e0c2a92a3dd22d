"""Bookkeeping benchmark: what an upload costs outside the detector, counted and timed in-process.

For N distinct face photos, the two halves of an upload's life run in this process on real parts
(SQLite in a temp folder, a private redis-server, the shipped model), and each is measured:

1. the door      POST /api/v1/uploads through the Flask app (test client: no HTTP server), i.e.
                 authentication, rate limit, back-pressure, spooling and probing, the blob, the
                 record, the enqueue;
2. the worker    the real DetectorWorker (SimpleWorker, burst) taking the jobs off the queue:
                 RQ's own bookkeeping, the lifecycle's transitions, the routing policy, the
                 webhook outbox, with the detector's own time measured apart.

Printed per item: SQL statements, Redis commands (INFO commandstats, all clients; commands run
inside the rate limiter's Lua scripts count too), and CPU ms outside the detector, against the
baseline of the detector's own CPU ms per item in the same run. With one worker per host the
service's end-to-end ratio (bench/service.py) cannot beat detector / (detector + bookkeeping);
several single-threaded workers hide the bookkeeping of one behind the detection of another,
but it still costs that CPU. This shows where it goes.

    python bench/bookkeeping.py [--items 40] [--profile 25]

--profile N prints the N functions with the most own CPU time in the worker outside the detector.
Needs the shipped model (or VERITY_MODEL) and real face photos in ../shared/data/faces-london.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from PIL import Image
from redis import Redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FACES = REPO.parent / "shared" / "data" / "faces-london" / "neutral_front"


def face_scene(path: Path, tag: int) -> bytes:
    """A 1280x720 JPEG with one real face (distinct bytes per tag, so nothing is reused)."""
    src = Image.open(path).convert("RGB")
    src = src.resize((round(src.width * 480 / src.height), 480), Image.BILINEAR)
    canvas = Image.new("RGB", (1280, 720), (96, 110, 120 + tag % 100))
    canvas.paste(src, ((1280 - src.width) // 2, 120))
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=90)
    return buf.getvalue()


class Counts:
    """SQL statements (SQLAlchemy cursor events on the engines given) and Redis commands."""

    def __init__(self, engines, redis: Redis):
        from sqlalchemy import event

        self.sql = 0
        self.redis = redis
        for engine in engines:
            event.listen(engine, "before_cursor_execute", self._on_sql)

    def _on_sql(self, *_args) -> None:
        self.sql += 1

    def redis_calls(self) -> int:
        return sum(int(v["calls"]) for k, v in self.redis.info("commandstats").items()
                   if not k.startswith("cmdstat_info"))


@contextmanager
def redis_server(tmp: Path):
    from cli.embedded_redis import free_port, redis_server_binary

    port = free_port()
    proc = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(200):
        try:
            Redis.from_url(url).ping()
            break
        except OSError:
            time.sleep(0.02)
        except Exception:  # noqa: BLE001 - still starting
            time.sleep(0.02)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=40)
    ap.add_argument("--profile", type=int, default=0, help="print the top N worker functions outside the detector")
    args = ap.parse_args()
    faces = sorted(FACES.glob("*.jpg"))
    if not faces:
        sys.exit(f"face photos not found at {FACES}")

    from sqlalchemy import func, select

    from app import create_app
    from core.clients import create_client
    from core.db import upgrade
    from core.models import Analysis
    from core.settings import load_settings
    from detector.pipeline import Detector
    from workers.context import configure
    from workers.worker import DetectorWorker

    tmp = Path(tempfile.mkdtemp(prefix="verity-bookkeeping-"))
    photos = [face_scene(faces[i % len(faces)], i) for i in range(args.items + 1)]
    with redis_server(tmp) as redis_url:
        db_url = f"sqlite:///{tmp / 'verity.db'}"
        upgrade(db_url)
        cfg = load_settings(make_secret=False)
        settings = load_settings(env={}, data_dir=tmp, database_url=db_url, redis_url=redis_url,
                                 secret_key="bench", model=cfg.model, models_dir=cfg.models_dir, device=cfg.device,
                                 frames=cfg.frames, ort_spin=cfg.ort_spin, api_rate_limit="1000000/minute",
                                 log_level="WARNING")
        app = create_app({"VERITY": settings})
        with app.extensions["verity.db"].session() as s:
            key = create_client(s, "bench", show_score=True).key
        client = app.test_client()
        headers = {"Authorization": f"Bearer {key}"}

        detector = Detector(model=settings.model, models_dir=settings.models_dir, device=settings.device,
                            frames=settings.frames, spin=settings.ort_spin)
        detector.warmup()
        det_cpu = [0.0]
        analyze = detector.analyze_path

        def timed(path, progress=None, **kwargs):
            t = time.process_time()
            try:
                return analyze(path, progress, **kwargs)
            finally:
                det_cpu[0] += time.process_time() - t

        detector.analyze_path = timed
        ctx = configure(settings, detector=detector)
        counts = Counts([app.extensions["verity.db"].engine, ctx.db.engine], Redis.from_url(redis_url))

        def upload(data: bytes) -> None:
            r = client.post("/api/v1/uploads", data={"file": (io.BytesIO(data), "face.jpg")}, headers=headers,
                            content_type="multipart/form-data")
            assert r.status_code == 202, r.get_json()

        # warm-up item through both halves
        upload(photos[0])
        DetectorWorker(context=ctx).work(burst=True, with_scheduler=False, logging_level="WARNING")
        det_cpu[0] = 0.0

        sql0, red0, cpu0 = counts.sql, counts.redis_calls(), time.process_time()
        for data in photos[1:]:
            upload(data)
        door = (counts.sql - sql0, counts.redis_calls() - red0 - 1, time.process_time() - cpu0)

        profiler = cProfile.Profile() if args.profile else None
        sql0, red0, cpu0 = counts.sql, counts.redis_calls(), time.process_time()
        worker = DetectorWorker(context=ctx)
        if profiler:
            profiler.enable()
        worker.work(burst=True, with_scheduler=False, logging_level="WARNING")
        if profiler:
            profiler.disable()
        work = (counts.sql - sql0, counts.redis_calls() - red0 - 1, time.process_time() - cpu0 - det_cpu[0])
        with app.extensions["verity.db"].session() as session:
            analysed = session.scalar(select(func.count()).select_from(Analysis))
        if analysed < args.items + 1:
            raise SystemExit(f"bookkeeping: only {analysed} of {args.items + 1} uploads were analysed (the "
                             "failed jobs' errors are logged above): the figures would be meaningless")
        app.extensions["verity.db"].dispose()
        ctx.db.dispose()

    n = args.items
    det_ms = det_cpu[0] / n * 1000
    rows = [
        ("detector, CPU ms per item (baseline)", f"{det_ms:.1f}", "", "1.00"),
        ("the door: SQL statements per upload", f"{door[0] / n:.1f}", "", ""),
        ("the door: Redis commands per upload", f"{door[1] / n:.1f}", "", ""),
        ("the door: CPU ms per upload (Flask app, in-process)", f"{door[2] / n * 1000:.1f}", "",
         f"{door[2] / n * 1000 / det_ms:.2f}"),
        ("the worker: SQL statements per item", f"{work[0] / n:.1f}", "", ""),
        ("the worker: Redis commands per item (RQ included)", f"{work[1] / n:.1f}", "", ""),
        ("the worker: CPU ms per item outside the detector", f"{work[2] / n * 1000:.1f}", "",
         f"{work[2] / n * 1000 / det_ms:.2f}"),
        ("detector's share of the CPU: detector / (detector + door + worker)",
         f"{det_ms / (det_ms + (door[2] + work[2]) / n * 1000):.1%}", "", ""),
    ]
    print(f"\nVerity bookkeeping benchmark: {n} distinct 1280x720 face photos, SQLite, "
          f"model {detector.model_name} {detector.model_version} on {detector.provider}")
    header = ("measure", "value", "target", "vs detector CPU")
    widths = [max(len(r[i]) for r in [*rows, header]) for i in range(4)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    if profiler:
        out = io.StringIO()
        st = pstats.Stats(profiler, stream=out)
        st.sort_stats("tottime").print_stats(args.profile * 3)
        print("\nworker, most own CPU time (detector internals included; read the rest):")
        print(out.getvalue()[:12000])


if __name__ == "__main__":
    main()
