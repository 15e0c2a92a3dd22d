"""Hostile requests at the HTTP door (POST /api/v1/uploads and the page's /upload), on the real
app, Redis, SQLite and a real ONNX detector: every input gets a clear 4xx, or is accepted and
then ends with a verdict (`unreadable` ones in review), never a 500, a hung worker or a path
outside the blob store. The media layer itself is fuzzed in test_media_fuzz.py; this file
drives whole requests (and, for slow bodies, a real server on 127.0.0.1)."""

from __future__ import annotations

import http.client
import io
import socket
import threading
import time
import uuid
from pathlib import Path

import av
import numpy as np
import pytest
from mediagen import jpeg_bytes, no_face_image, png_bomb, png_bytes, write_video
from PIL import Image
from sqlalchemy import select
from test_media_fuzz import gif_extent_bomb, many_streams_video, png_ztxt_bomb, polyglot

from core.models import Analysis, Upload

MAX_BYTES = 300_000
"""A small upload limit for this module, so over-limit bodies stay cheap."""


@pytest.fixture(scope="module")
def door_detector(tmp_path_factory):
    """The shipped model when there is one, else a tiny real ONNX classifier (real RetinaFace)."""
    from chaos.chaoslib import model_for_tests

    from detector.pipeline import Detector

    det = Detector(model=model_for_tests(tmp_path_factory.mktemp("model")), device="cpu", frames=4)
    det.warmup()
    return det


@pytest.fixture
def door(settings, door_detector):
    from app import create_app

    s = settings.with_(max_upload_bytes=MAX_BYTES, job_timeout=60, job_retry_intervals=(0,))
    app = create_app({"VERITY": s, "TESTING": True, "WTF_CSRF_ENABLED": False})
    yield app, s
    app.extensions["verity.db"].dispose()


def run_worker(settings, detector) -> None:
    from workers.context import configure
    from workers.worker import DetectorWorker

    ctx = configure(settings, detector=detector)
    DetectorWorker(context=ctx).work(burst=True, with_scheduler=False, logging_level="WARNING")


def _exif_absurd() -> bytes:
    im = no_face_image((96, 64))
    exif = Image.Exif()
    exif[0x0112] = 9999            # Orientation: not 1..8
    exif[0x011A] = (2**32 - 1, 1)  # XResolution
    exif[0xA002] = 2**31 - 1       # PixelXDimension
    exif[0xA003] = 2**31 - 1       # PixelYDimension
    exif[0x010F] = "A" * 60000     # Make: a huge string
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()


def _video_with_pts(path: Path, pts: list[int], size=(64, 48), rate: int = 10) -> bytes:
    from fractions import Fraction

    container = av.open(str(path), "w", format="mp4")
    s = container.add_stream("libx264", rate=rate)
    s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
    s.options = {"preset": "ultrafast"}
    s.codec_context.time_base = Fraction(1, rate)
    for p in pts:
        f = av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), 90, np.uint8), format="rgb24")
        f.pts = p
        f.time_base = Fraction(1, rate)
        for pkt in s.encode(f):
            container.mux(pkt)
    for pkt in s.encode():
        container.mux(pkt)
    container.close()
    return path.read_bytes()


def corpus(tmp: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, client filename)."""
    jpg = jpeg_bytes(no_face_image((320, 240)))
    png = png_bytes(no_face_image((96, 64)))
    clip = write_video(tmp / "c.mp4", no_face_image((160, 120)), seconds=1, fps=8).read_bytes()
    return {
        "zero_bytes": (b"", "zero.jpg"),
        "truncated_jpeg": (jpg[: len(jpg) * 6 // 10], "t.jpg"),
        "jpeg_header_only": (jpg[:200], "h.jpg"),
        "truncated_png": (png[: len(png) // 2], "t.png"),
        "truncated_mp4": (clip[: len(clip) * 4 // 10], "t.mp4"),
        "mp4_header_only": (clip[:300], "h.mp4"),
        "png_bomb_50k": (png_bomb(), "bomb.png"),
        "gif_extent_bomb": (gif_extent_bomb(), "bomb.gif"),
        "png_ztxt_bomb": (png_ztxt_bomb(), "ztxt.png"),
        "gif_html_polyglot": (polyglot(), "poly.jpg"),
        "jpeg_with_html_tail": (jpg + b"<html><script>alert(1)</script></html>", "tail.jpg"),
        "jpeg_with_zip_tail": (jpg + b"PK\x03\x04" + b"\x00" * 26 + b"evil.sh", "zip.jpg"),
        "html_as_jpg": (b"<!doctype html><html><body onload=alert(1)>x</body></html>", "page.jpg"),
        "svg_as_jpg": (b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "img.jpg"),
        "script_as_jpg": (b"#!/bin/sh\nrm -rf /\n", "run.jpg"),
        "php_in_gif": (b"GIF89a<?php system($_GET['c']); ?>", "shell.gif"),
        "exif_absurd": (_exif_absurd(), "exif.jpg"),
        "many_streams": (many_streams_video(tmp / "streams.mkv"), "streams.mkv"),
        "long_gap_video": (_video_with_pts(tmp / "long.mp4", [0, 10 * 3600 * 10]), "long.mp4"),
        "one_frame_video": (_video_with_pts(tmp / "one.mp4", [0]), "one.mp4"),
        "huge_frame_video": (_video_with_pts(tmp / "huge.mp4", [0], size=(4096, 2304)), "huge.mp4"),
        "over_limit": (b"\xff\xd8\xff" + b"\x00" * (MAX_BYTES + 10), "big.jpg"),
    }


def _multipart(data: bytes, filename: str, part_type: str = "image/jpeg") -> tuple[bytes, str]:
    b = uuid.uuid4().hex
    body = (f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: {part_type}\r\n\r\n").encode() + data + f"\r\n--{b}--\r\n".encode()
    return body, f"multipart/form-data; boundary={b}"


def _check_outcomes(app, s, detector, outcomes: dict[str, tuple[int, dict]]) -> list[str]:
    """Every answer a clear 4xx or 202; every 202 ends with a verdict after a worker run."""
    lines = []
    for name, (status, body) in outcomes.items():
        assert status != 500 and status < 500, (name, status, body)
        if status != 202:
            assert 400 <= status < 500 and body.get("code") and body.get("message"), (name, status, body)
    accepted = {n: b["id"] for n, (st, b) in outcomes.items() if st == 202}
    if accepted:
        run_worker(s, detector)  # in the main thread: rq's SIGALRM job timeout bounds each job
    with app.extensions["verity.db"].session() as db:
        for name, (status, body) in outcomes.items():
            if status != 202:
                lines.append(f"{name:22} {status} {body.get('code')}")
                continue
            up = db.get(Upload, accepted[name])
            a = db.scalar(select(Analysis).where(Analysis.upload_id == up.id))
            assert up.status not in ("queued", "analyzing"), (name, up.status)
            if a is None:
                assert up.status == "in_review", (name, up.status)  # failed closed
                lines.append(f"{name:22} 202 -> {up.status} (analysis_failed)")
                continue
            if a.label == "unreadable":
                assert up.status == "in_review", (name, up.status)
            lines.append(f"{name:22} 202 -> {a.label} / {up.status}")
    return lines


def test_bad_corpus_through_the_api(door, door_detector, tmp_path, authorize):
    app, s = door
    client = app.test_client()
    authorize(app, client)
    outcomes = {}
    for name, (data, fname) in corpus(tmp_path).items():
        body, ctype = _multipart(data, fname)
        r = client.post("/api/v1/uploads", data=body, content_type=ctype)
        outcomes[name] = (r.status_code, r.get_json() or {})
    must_refuse = {"zero_bytes": 422, "png_bomb_50k": 422, "html_as_jpg": 415, "svg_as_jpg": 415,
                   "script_as_jpg": 415, "over_limit": 413, "many_streams": 422}
    for name, code in must_refuse.items():
        assert outcomes[name][0] == code, (name, outcomes[name])
    lines = _check_outcomes(app, s, door_detector, outcomes)
    print("\nHTTP door, bad corpus:\n  " + "\n  ".join(lines))


def test_bad_corpus_through_the_page(door, door_detector, tmp_path):
    """The browser page's door enforces the same checks (CSRF is tested in tests/security)."""
    app, s = door
    client = app.test_client()
    outcomes = {}
    for name, (data, fname) in corpus(tmp_path).items():
        r = client.post("/upload", data={"file": (io.BytesIO(data), fname)}, content_type="multipart/form-data")
        outcomes[name] = (r.status_code, r.get_json() or {})
    _check_outcomes(app, s, door_detector, outcomes)


def test_wrong_content_types(door, door_detector, authorize):
    app, s = door
    client = app.test_client()
    authorize(app, client)
    jpg = jpeg_bytes(no_face_image((160, 120)))
    html = b"<!doctype html><script>alert(1)</script>"
    cases = {
        "jpeg_part_says_html": _multipart(jpg, "x.html", "text/html"),
        "html_part_says_jpeg": _multipart(html, "x.jpg", "image/jpeg"),
        "raw_jpeg_says_png": (jpg, "image/png"),
        "raw_html_says_jpeg": (html, "image/jpeg"),
        "raw_jpeg_says_json": (jpg, "application/json"),
        "urlencoded": (b"file=" + jpg[:100], "application/x-www-form-urlencoded"),
        "multipart_no_boundary": (jpg, "multipart/form-data"),
        "multipart_garbage": (b"--x\r\nnot a part\r\n", "multipart/form-data; boundary=x"),
        "no_content_type": (jpg, ""),
    }
    outcomes = {}
    for name, (body, ctype) in cases.items():
        r = client.post("/api/v1/uploads", data=body, headers={"Content-Type": ctype} if ctype else {})
        outcomes[name] = (r.status_code, r.get_json() or {})
    assert outcomes["html_part_says_jpeg"][0] == 415
    assert outcomes["raw_html_says_jpeg"][0] == 415
    assert outcomes["jpeg_part_says_html"][0] == 202  # the bytes decide, not the client's label
    lines = _check_outcomes(app, s, door_detector, outcomes)
    with app.extensions["verity.db"].session() as db:
        for up in db.scalars(select(Upload)):
            assert up.mime == "image/jpeg", up.mime  # stored type is the sniffed one
    print("\nHTTP door, content types:\n  " + "\n  ".join(lines))


@pytest.mark.parametrize("filename", [
    "../../../../etc/passwd.jpg", "..\\..\\windows\\win.ini.jpg", "/abs/path.jpg", "a\x00b.jpg",
    "é" * 300 + ".jpg", "\u202egnp.jpg", "CON", "", ".", "..", " ", "a/../../b.jpg", "%2e%2e%2fx.jpg",
])
def test_hostile_filenames_are_metadata_only(door, authorize, filename):
    app, s = door
    client = app.test_client()
    authorize(app, client)
    jpg = jpeg_bytes(no_face_image((64, 48)))
    r = client.post("/api/v1/uploads", data={"file": (io.BytesIO(jpg), filename)},
                    content_type="multipart/form-data")
    assert r.status_code in (202, 400), r.get_json()
    if r.status_code != 202:
        return
    with app.extensions["verity.db"].session() as db:
        up = db.get(Upload, r.get_json()["id"])
        stored = up.filename or ""
        assert "/" not in stored and "\\" not in stored and "\x00" not in stored and stored not in (".", "..")
        assert len(stored) <= 255
    blob_files = [p for p in s.data_dir.rglob("*") if p.is_file() and p.stat().st_size == len(jpg)]
    assert blob_files and all(s.blob_dir in p.parents for p in blob_files), blob_files


def test_many_parts_and_many_files(door, authorize):
    app, _ = door
    client = app.test_client()
    authorize(app, client)
    b = uuid.uuid4().hex
    parts = b"".join(f'--{b}\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nx\r\n'.encode()
                     for i in range(2000))
    r = client.post("/api/v1/uploads", data=parts + f"--{b}--\r\n".encode(),
                    content_type=f"multipart/form-data; boundary={b}")
    assert r.status_code in (400, 413), (r.status_code, r.get_json())
    jpg = jpeg_bytes(no_face_image((32, 24)))
    files = b"".join(f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="{i}.jpg"\r\n'
                     f"Content-Type: image/jpeg\r\n\r\n".encode() + jpg + b"\r\n" for i in range(300))
    r = client.post("/api/v1/uploads", data=files + f"--{b}--\r\n".encode(),
                    content_type=f"multipart/form-data; boundary={b}")
    assert r.status_code in (202, 400, 413), (r.status_code, r.get_json())
    # a field far past the form memory limit
    big = f'--{b}\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n'.encode() + b"x" * 2_000_000
    r = client.post("/api/v1/uploads", data=big + f"\r\n--{b}--\r\n".encode(),
                    content_type=f"multipart/form-data; boundary={b}")
    assert r.status_code in (400, 413), (r.status_code, r.get_json())


@pytest.fixture
def door_server(door):
    from werkzeug.serving import make_server

    app, _ = door
    server = make_server("127.0.0.1", 0, app, threaded=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield app, server.server_port
    server.shutdown()
    t.join(5)


def test_slow_and_abandoned_bodies_do_not_block_the_door(door_server, authorize):
    """Slow-loris uploads (a few bytes per 0.3 s) and clients that stop mid-body: the server keeps
    answering other requests; the slow ones end with an answer or a closed socket, bounded."""
    app, port = door_server
    key = authorize(app, app.test_client())
    jpg = jpeg_bytes(no_face_image((64, 48)))
    body, ctype = _multipart(jpg, "slow.jpg")
    head = (f"POST /api/v1/uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    results: list[str] = []

    def loris(abandon: bool):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(head)
            sent = 0
            for _ in range(10):  # about 3 s of trickle
                sock.sendall(body[sent:sent + 16])
                sent += 16
                time.sleep(0.3)
            if abandon:
                results.append("abandoned")
                return
            sock.sendall(body[sent:])
            sock.settimeout(15)
            results.append(sock.recv(64).decode(errors="replace").split("\r\n")[0])

    threads = [threading.Thread(target=loris, args=(i % 2 == 1,), daemon=True) for i in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/healthz")
    assert conn.getresponse().status == 200  # answered while six bodies trickle in
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    assert sorted(results).count("abandoned") == 3
    assert [r for r in results if r != "abandoned"] == ["HTTP/1.1 202 ACCEPTED"] * 3, results
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/healthz")
    assert conn.getresponse().status == 200
    with app.extensions["verity.db"].session() as db:
        assert len(db.scalars(select(Upload)).all()) == 3  # abandoned bodies leave no row
