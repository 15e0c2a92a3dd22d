"""Media made by the tests themselves (Pillow / PyAV), and paths to real face photos.

Real faces come from ../shared/data (CC BY 4.0, beside the repository in CI); tests that need
them skip with a reason when that folder is absent.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def face_photo_paths(n: int = 4) -> list[Path]:
    folder = SHARED_DATA / "faces-london" / "neutral_front"
    if not folder.is_dir():
        pytest.skip(f"real face photos not found at {folder} (../shared/data beside the repo)")
    return sorted(folder.glob("*.jpg"))[:n]


def face_image(size: tuple[int, int] = (1920, 1080), face_height: int = 600, index: int = 0) -> Image.Image:
    """A real face photo scaled and pasted onto a plain canvas of the given size."""
    src = Image.open(face_photo_paths(index + 1)[index]).convert("RGB")
    scale = face_height / src.height
    src = src.resize((round(src.width * scale), face_height), Image.BILINEAR)
    canvas = Image.new("RGB", size, (96, 110, 120))
    canvas.paste(src, ((size[0] - src.width) // 2, (size[1] - src.height) // 2))
    return canvas


def no_face_image(size: tuple[int, int] = (800, 600)) -> Image.Image:
    """A landscape-like gradient with shapes: plenty of texture, no face."""
    w, h = size
    y = np.linspace(0, 1, h)[:, None]
    x = np.linspace(0, 1, w)[None, :]
    rgb = np.stack([120 + 100 * y + 0 * x, 160 + 60 * x * y, 200 - 120 * y + 0 * x], -1)
    rng = np.random.default_rng(1)
    rgb = rgb + rng.normal(0, 8, rgb.shape)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def jpeg_bytes(im: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def write_video(path: Path, image: Image.Image, seconds: float = 2.0, fps: int = 15,
                codec: str = "libx264", size: tuple[int, int] | None = None, rotation: int = 0,
                gop: int = 30) -> Path:
    """An H.264 (or other codec) clip of the image drifting slowly, made with PyAV."""
    size = size or image.size
    base = np.asarray(image.convert("RGB").resize(size))
    container = av.open(str(path), "w")
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    if codec == "libx264":
        stream.options = {"preset": "ultrafast", "g": str(gop)}
    if rotation:
        stream.set_display_rotation(rotation)
    for i in range(int(seconds * fps)):
        shift = int(6 * np.sin(i / 5))
        frame = np.roll(base, shift, axis=1)
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A tiny PNG whose header declares an enormous image (IDAT holds almost nothing)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def sbi_validation_csv(folder: Path, face_detector, n: int = 3) -> Path:
    """A tiny validation set as `training.eval_sets` writes one: n real face photos and a
    Self-Blended fake of each (PNG), listed in folder/eval.csv (groups heldout-real and
    sbi-heldout). `face_detector` is a runtime FaceDetector (`Detector(...).face_detector`)."""
    import csv

    from training import sbi

    rows = []
    for i in range(n):
        rgb = np.asarray(face_image((640, 480), 360, index=i))
        f = face_detector.detect(rgb)[0]
        fake, _ = sbi.self_blend(rgb, f.box, f.landmarks, np.random.default_rng(i))
        for name, img, label, group in ((f"real{i}.png", rgb, "real", "heldout-real"),
                                        (f"fake{i}.png", fake, "fake", "sbi-heldout")):
            Image.fromarray(img).save(folder / name)
            rows.append([name, label, "", group])
    path = folder / "eval.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "condition", "group"])
        w.writerows(rows)
    return path
