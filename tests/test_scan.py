"""`verity scan` as a user runs it: a subprocess on a real image and a real mp4."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from mediagen import face_image, jpeg_bytes, no_face_image, write_video


def verity() -> str:
    exe = Path(sys.executable).with_name("verity")
    return str(exe) if exe.exists() else shutil.which("verity")


def run_scan(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "VERITY_DEVICE": "cpu"}
    return subprocess.run([verity(), "scan", *args], check=False, capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=180)


def test_scan_image_and_video_json(tmp_path):
    (tmp_path / "face.jpg").write_bytes(jpeg_bytes(face_image((1280, 720), 400)))
    write_video(tmp_path / "clip.mp4", face_image((640, 360), 240), seconds=3, fps=10)
    proc = run_scan("--json", "--frames", "6", str(tmp_path / "face.jpg"), str(tmp_path / "clip.mp4"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert [Path(r["path"]).name for r in rows] == ["face.jpg", "clip.mp4"]
    for r in rows:
        assert r["label"] in ("likely_authentic", "suspected_fake")
        assert 0 <= r["score"] <= 1 and r["faces"] >= 1 and r["model_name"]
    assert rows[1]["media"]["kind"] == "video" and rows[1]["media"]["codec"] == "h264"


def test_scan_directory_table_and_unreadable_exit_code(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "face.jpg").write_bytes(jpeg_bytes(face_image((800, 600), 400)))
    (tmp_path / "in" / "landscape.jpg").write_bytes(jpeg_bytes(no_face_image()))
    (tmp_path / "in" / "notes.jpg").write_text("this is not an image")
    proc = run_scan(str(tmp_path / "in"), cwd=tmp_path)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "no_face" in proc.stdout and "unreadable" in proc.stdout
    assert "face.jpg" in proc.stdout and "unsupported_type" in proc.stdout


def test_scan_refuses_to_start_on_a_bad_model(tmp_path):
    proc = run_scan("--model", str(tmp_path / "missing"), "x.jpg", cwd=tmp_path)
    assert proc.returncode == 1 and "cannot start the detector" in proc.stderr
