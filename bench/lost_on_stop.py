"""Jobs lost when a worker is stopped under a stream of jobs: RQ's SimpleWorker against Verity's.

A worker on two queues (as the detector workers take the live queue, then uploads) is started,
left to work for 1.2-1.8 s while jobs arrive every 20 ms, and stopped with SIGTERM (what Ctrl-C
and `verity up`'s stop send), again and again. Afterwards each job whose record still says
`queued` but which waits in no list (its queue, a worker's own list) is lost: nothing would ever
run it, not even the reconciler before this fix (workers/lease.py explains the window: RQ's BLPOP
over several queues, interrupted by the stop). Same Redis (a private redis-server), same stream,
same stops for both; the baseline is RQ's own SimpleWorker.

    python bench/lost_on_stop.py [--stops 100]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from redis import Redis
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from rq import Queue
from rq.job import Job, JobStatus

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WORKERS = {
    "rq SimpleWorker (baseline)": """
from redis import Redis; from rq import Queue, SimpleWorker
r = Redis.from_url(URL)
SimpleWorker([Queue(n, connection=r, serializer='json') for n in ('first', 'later')], connection=r,
             serializer='json').work(with_scheduler=False)
""",
    "Verity ContextWorker": """
from workers.lease import ContextWorker
class TwoQueues(ContextWorker):
    @classmethod
    def queues_to_take(cls, settings): return ['first', 'later']
TwoQueues().work(with_scheduler=False)
""",
}


def run(kind: str, url: str, stops: int, tmp: Path, bar, seed: int) -> dict:
    from core.queue import live_job_status

    redis = Redis.from_url(url)
    redis.flushdb()
    later = Queue("later", connection=redis, serializer="json")
    ids: list[str] = []
    done = threading.Event()

    def stream() -> None:
        while not done.is_set():
            ids.append(later.enqueue("time.sleep", 0.01).id)
            time.sleep(0.02)

    env = {**os.environ, "REDIS_URL": url, "DATABASE_URL": f"sqlite:///{tmp / 'bench.db'}",
           "VERITY_DATA_DIR": str(tmp / "var"), "VERITY_LOG_LEVEL": "WARNING"}
    code = f"URL = {url!r}\n" + WORKERS[kind]
    rng = random.Random(seed)
    feeder = threading.Thread(target=stream, daemon=True)
    feeder.start()
    stop_s, hung = [], 0
    task = bar.add_task(kind, total=stops)
    try:
        for _ in range(stops):
            proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(1.2, 1.8))
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                hung += 1
                proc.kill()
                proc.wait()
            stop_s.append(time.monotonic() - t0)
            bar.advance(task)
    finally:
        done.set()
        feeder.join()
    lost = [i for i in ids if Job.fetch(i, connection=redis, serializer="json").get_status() == JobStatus.QUEUED
            and live_job_status(redis, i) is None]
    stop_s.sort()
    return {"jobs": len(ids), "lost": len(lost), "hung": hung, "stop_median": stop_s[len(stop_s) // 2]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stops", type=int, default=100, help="SIGTERMs per worker kind")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import logging

    from cli import embedded_redis

    logging.getLogger("core.queue").setLevel(logging.ERROR)  # each lost job would be one warning
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        proc, url = embedded_redis.start(tmp, aof=False)
        try:
            with Progress() as bar:
                rows = {kind: run(kind, url, args.stops, tmp, bar, args.seed) for kind in WORKERS}
        finally:
            embedded_redis.stop(proc, tmp)
    table = Table(title=f"Jobs lost to {args.stops} SIGTERMs of a worker on two queues, a job every 20 ms")
    for col in ("worker", "jobs", "lost", "lost per 100 stops", "stops that hung > 15 s", "median stop (s)"):
        table.add_column(col, justify="left" if col == "worker" else "right")
    for kind, r in rows.items():
        table.add_row(kind, str(r["jobs"]), str(r["lost"]), f"{100 * r['lost'] / args.stops:.1f}", str(r["hung"]),
                      f"{r['stop_median']:.2f}")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
