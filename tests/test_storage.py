"""Blob storage: the folder backend and the S3 backend against a real moto server process."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from core.settings import S3Settings
from core.storage import BlobNotFound
from core.storage.files import FileStorage


def _blob(tmp_path, data: bytes):
    p = tmp_path / "in.bin"
    p.write_bytes(data)
    return hashlib.sha256(data).hexdigest(), p


def test_file_storage_round_trip(tmp_path):
    st = FileStorage(tmp_path / "blobs")
    sha, p = _blob(tmp_path, b"hello blob")
    assert not st.exists(sha)
    st.put_file(sha, p)
    assert st.exists(sha)
    assert st.path_for(sha).parent.parent.name == sha[:2]
    out = tmp_path / "out.bin"
    st.get_to_file(sha, out)
    assert out.read_bytes() == b"hello blob"
    sha2, p2 = _blob(tmp_path, b"hello blob")
    st.put_file(sha2, p2)  # same content again: a no-op
    assert [x.name for x in st.path_for(sha).parent.iterdir()] == [sha]
    st.delete(sha)
    with pytest.raises(BlobNotFound):
        st.get_to_file(sha, out)


def test_file_storage_refuses_non_digest_keys(tmp_path):
    st = FileStorage(tmp_path / "blobs")
    with pytest.raises(ValueError):
        st.path_for("../../etc/passwd")


@pytest.fixture(scope="module")
def moto_endpoint():
    from cli.embedded_redis import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("moto server did not start")
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)


def test_s3_storage_against_moto_server(tmp_path, moto_endpoint, monkeypatch):
    import boto3

    from core.storage.s3 import S3Storage

    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}.items():
        monkeypatch.setenv(k, v)
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket="verity")
    st = S3Storage(S3Settings(bucket="verity", endpoint_url=moto_endpoint, region="us-east-1"))
    assert "verity" in st.check()
    sha, p = _blob(tmp_path, os.urandom(3000))
    assert not st.exists(sha)
    st.put_file(sha, p)
    assert st.exists(sha)
    out = tmp_path / "out.bin"
    st.get_to_file(sha, out)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == sha
    st.delete(sha)
    with pytest.raises(BlobNotFound):
        st.get_to_file(sha, out)


def test_local_path_reads_in_place_or_downloads(tmp_path, moto_endpoint, monkeypatch):
    import boto3

    from core.storage.s3 import S3Storage

    st = FileStorage(tmp_path / "blobs")
    sha, p = _blob(tmp_path, b"in place")
    st.put_file(sha, p)
    with st.local_path(sha, tmp_path / "tmp") as lp:
        assert lp == st.path_for(sha) and lp.read_bytes() == b"in place"
    with pytest.raises(BlobNotFound), st.local_path("0" * 64, tmp_path / "tmp"):
        pass
    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}.items():
        monkeypatch.setenv(k, v)
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket="verity2")
    s3 = S3Storage(S3Settings(bucket="verity2", endpoint_url=moto_endpoint, region="us-east-1"))
    sha, p = _blob(tmp_path, b"remote")
    s3.put_file(sha, p)
    with s3.local_path(sha, tmp_path / "tmp") as lp:
        assert lp.read_bytes() == b"remote"
    assert not lp.exists()


def test_left_over_spool_files_are_swept_when_the_web_app_starts(settings):
    """A SIGKILLed web process leaves its upload spools in <data>/tmp (tests/chaos found them);
    the next start removes Verity's old temp files and nothing else."""
    from app import create_app
    from core import defaults

    tmp = settings.tmp_dir
    tmp.mkdir(parents=True, exist_ok=True)
    old = time.time() - defaults.SPOOL_MAX_AGE_SECONDS - 60
    stale = [tmp / "upload-abc123", tmp / "s3-0123456789abcdef-x"]
    for p in stale:
        p.write_bytes(b"x" * 100)
        os.utime(p, (old, old))
    fresh = tmp / "upload-inflight"  # a request of another web process, still going
    fresh.write_bytes(b"y")
    foreign = tmp / "operator-notes.txt"
    foreign.write_bytes(b"z")
    os.utime(foreign, (old, old))
    create_app({"VERITY": settings})
    assert not any(p.exists() for p in stale)
    assert fresh.exists() and foreign.exists()
