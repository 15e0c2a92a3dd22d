"""Untrusted bytes against the media layer and the detector: every input ends in a clean
result or a named `UnreadableMedia`, never another exception, a hang, or runaway memory."""

from __future__ import annotations

import io
import json
import os
import resource
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mediagen import REPO, jpeg_bytes, no_face_image, png_bomb, png_bytes, write_video

from detector import media

SEEDS: dict[str, bytes] = {}


def seeds(tmp_dir: Path) -> dict[str, bytes]:
    if not SEEDS:
        im = no_face_image((64, 48))
        SEEDS["jpeg"] = jpeg_bytes(im)
        SEEDS["png"] = png_bytes(im)
        buf = io.BytesIO()
        im.save(buf, "GIF")
        SEEDS["gif"] = buf.getvalue()
        buf = io.BytesIO()
        im.save(buf, "WEBP")
        SEEDS["webp"] = buf.getvalue()
        SEEDS["mp4"] = write_video(tmp_dir / "seed.mp4", im, seconds=0.5, fps=8).read_bytes()
    return SEEDS


def check_media(data: bytes) -> None:
    """The property: identify/probe/load/sample either succeed or raise UnreadableMedia."""
    try:
        kind, _ = media.identify(data)
        media.probe(data, kind)
        if kind == "image":
            rgb, _ = media.load_image(data)
            assert rgb.ndim == 3 and rgb.shape[2] == 3
        else:
            for frame in media.sample_video(data, 4):
                assert frame.image.ndim == 3
    except media.UnreadableMedia as e:
        assert e.reason and e.message


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096))
def test_arbitrary_bytes(data):
    check_media(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["jpeg", "png", "gif", "webp", "mp4"]), cut=st.floats(0, 1),
       flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=12))
def test_mutated_real_files(tmp_path_factory, kind, cut, flips):
    base = bytearray(seeds(tmp_path_factory.mktemp("seeds"))[kind])
    for where, value in flips:
        base[int(where * (len(base) - 1))] = value
    data = bytes(base[: max(1, int(len(base) * cut))]) if cut < 0.98 else bytes(base)
    check_media(data)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def gif_extent_bomb() -> bytes:
    """A GIF whose logical screen is 65535 x 65535 (the CVE-2022-45198 shape)."""
    im = no_face_image((8, 8))
    buf = io.BytesIO()
    im.save(buf, "GIF")
    data = bytearray(buf.getvalue())
    data[6:10] = struct.pack("<HH", 65535, 65535)
    return bytes(data)


def png_ztxt_bomb() -> bytes:
    """A small valid PNG carrying a zTXt chunk that inflates to 64 MB."""
    base = png_bytes(no_face_image((16, 16)))
    payload = b"Comment\x00\x00" + zlib.compress(b"A" * (64 * 1024 * 1024), 9)
    iend = base.rindex(b"IEND") - 4
    return base[:iend] + _chunk(b"zTXt", payload) + base[iend:]


def many_streams_video(path: Path, n: int = 40) -> bytes:
    container = av.open(str(path), "w", format="matroska")
    streams = []
    for _ in range(n):
        s = container.add_stream("libx264", rate=5)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        streams.append(s)
    frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
    for s in streams:
        for p in s.encode(frame):
            container.mux(p)
        for p in s.encode():
            container.mux(p)
    container.close()
    return path.read_bytes()


def polyglot() -> bytes:
    """Starts as a GIF, carries HTML/JS after its header."""
    return b"GIF89a\x01\x00\x01\x00\x00\x00\x00;<html><script>alert(document.cookie)</script></html>"


@pytest.mark.parametrize("name,builder,reasons", [
    ("png_bomb", png_bomb, {"too_many_pixels"}),
    ("gif_extent_bomb", gif_extent_bomb, {"too_many_pixels", "corrupt_image"}),
    ("polyglot", polyglot, {"corrupt_image"}),
    ("svg", lambda: b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', {"unsupported_type"}),
    ("zero", lambda: b"", {"empty"}),
])
def test_named_bad_inputs(name, builder, reasons):
    with pytest.raises(media.UnreadableMedia) as info:
        data = builder()
        kind, _ = media.identify(data)
        media.probe(data, kind)
        media.load_image(data)
    assert info.value.reason in reasons, info.value


def test_ztxt_bomb_does_not_inflate_memory():
    data = png_ztxt_bomb()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        rgb, _ = media.load_image(data)
        assert rgb.shape == (16, 16, 3)
    except media.UnreadableMedia as e:
        assert e.reason == "corrupt_image"
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 32, f"peak RSS grew by {grown_mb:.0f} MB on a zTXt bomb"


def test_video_with_many_streams_is_refused(tmp_path):
    data = many_streams_video(tmp_path / "streams.mkv")
    with pytest.raises(media.UnreadableMedia) as info:
        media.probe(data, "video")
    assert info.value.reason == "too_many_streams"


def test_over_long_and_oversized_video_caps(tmp_path):
    clip = write_video(tmp_path / "c.mp4", no_face_image((320, 240)), seconds=2, fps=10)
    with pytest.raises(media.UnreadableMedia, match="too_long"):
        media.probe_video(clip, max_seconds=1.0)
    with pytest.raises(media.UnreadableMedia, match="too_many_pixels"):
        list(media.sample_video(clip, 4, max_pixels=320 * 200))
    with pytest.raises(media.UnreadableMedia, match="too_many_frames"):
        list(media.sample_video(clip, 20, max_decoded=5))


CORPUS_SCRIPT = r"""
import json, resource, sys
from pathlib import Path
from detector.pipeline import Detector
det = Detector(device="cpu")
det.warmup()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = {}
for p in sorted(Path(sys.argv[1]).iterdir()):
    r = det.analyze_path(p)
    out[p.name] = [str(r.label), r.reasons[0] if r.reasons else ""]
out["_peak_growth_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
print(json.dumps(out))
"""


def test_detector_on_a_bad_corpus_in_a_subprocess(tmp_path):
    """The whole bad corpus through a real detector process: all unreadable, bounded memory."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "zero.jpg").write_bytes(b"")
    (corpus / "bomb.png").write_bytes(png_bomb())
    (corpus / "gif_bomb.gif").write_bytes(gif_extent_bomb())
    (corpus / "polyglot.gif").write_bytes(polyglot())
    (corpus / "page.jpg").write_bytes(b"<!doctype html><title>x</title>")
    jpg = jpeg_bytes(no_face_image((640, 480)))
    (corpus / "truncated.jpg").write_bytes(jpg[:200])
    clip = write_video(tmp_path / "c.mp4", no_face_image((320, 240)), seconds=1, fps=10).read_bytes()
    (corpus / "truncated.mp4").write_bytes(clip[:300])
    (corpus / "streams.mkv").write_bytes(many_streams_video(tmp_path / "s.mkv"))
    proc = subprocess.run([sys.executable, "-c", CORPUS_SCRIPT, str(corpus)], check=False, capture_output=True, text=True,
                          cwd=REPO, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    growth = out.pop("_peak_growth_mb")
    print(f"\nbad corpus: {len(out)} files, peak RSS growth {growth:.0f} MB")
    for name, (label, reason) in out.items():
        print(f"  {name:16} {label:12} {reason[:70]}")
        assert label == "unreadable", (name, label, reason)
    assert growth < 300
