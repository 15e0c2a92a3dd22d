"""What the evidence page shows: the media file, the per-frame timeline, the top face crops, and
for a video the times a hand passed over the face (the occlusion check, marked on the timeline).

Boxes and scores come from the analysis (DetectionResult.to_dict() as stored by the worker). Crops
are cut server-side from the stored blob with the detector's own decoders (EXIF orientation,
video rotation), so a box lands on the same pixels the model saw; they are cached on disk.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from PIL import Image

from app.page import occlusion as words
from core import defaults
from core.models import Analysis, Upload
from core.storage import BlobNotFound

SAFE_TYPES = {
    "image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/gif": "gif",
    "video/mp4": "mp4", "video/webm": "webm", "video/quicktime": "mov", "video/x-matroska": "mkv",
}
"""Media types served as themselves; anything else is served as application/octet-stream."""

CROP_MARGIN = 0.25
"""Context around a face box in a crop, as a fraction of the box side."""

BAND_MIN_WIDTH = 0.8
"""The narrowest band a hand-over-face event gets on the timeline, in % of its width: a brief
event stays visible and clickable."""


@dataclass
class TopFace:
    rank: int
    frame_index: int
    timestamp: float
    face_index: int
    box: list[float]
    score: float | None


def frames_of(analysis: Analysis | None) -> list[dict[str, Any]]:
    return list((analysis.evidence or {}).get("frames") or []) if analysis else []


def top_score(frame: dict[str, Any]) -> float | None:
    scores = [f.get("fake_score") for f in frame.get("faces", []) if f.get("fake_score") is not None]
    return max(scores) if scores else None


def timeline(analysis: Analysis | None) -> list[dict[str, Any]]:
    return [{"index": f.get("index", i), "t": float(f.get("timestamp") or 0.0), "top": top_score(f),
             "faces": len(f.get("faces", []))} for i, f in enumerate(frames_of(analysis))]


def top_faces(analysis: Analysis | None, k: int = defaults.REVIEW_TOP_FACES) -> list[TopFace]:
    faces = []
    for f in frames_of(analysis):
        for j, face in enumerate(f.get("faces", [])):
            faces.append((face.get("fake_score") if face.get("fake_score") is not None else -1.0,
                          f.get("index", 0), float(f.get("timestamp") or 0.0), j, face.get("box")))
    faces.sort(key=lambda x: (-x[0], x[2]))
    return [TopFace(rank=i, frame_index=fi, timestamp=t, face_index=j, box=box, score=None if s < 0 else s)
            for i, (s, fi, t, j, box) in enumerate(faces[:k])]


def overlay(analysis: Analysis | None) -> list[dict[str, Any]]:
    """Per sampled frame: its time and face boxes with scores, for the SVG overlay in the page."""
    return [{"t": float(f.get("timestamp") or 0.0),
             "faces": [{"box": face.get("box"), "score": face.get("fake_score")} for face in f.get("faces", [])]}
            for f in frames_of(analysis)]


def timeline_position(t: float, ticks: list[dict[str, Any]], duration: float | None) -> float:
    """Where time `t` falls on the frame timeline, as a fraction of its width: the timeline's
    ticks are evenly spaced whatever their times, so between two ticks the position is
    interpolated, and before the first (after the last) it runs from 0 s (to the duration)."""
    n = len(ticks)
    if not n:
        return 0.0
    points = [(0.0, 0.0)] + [(tk["t"], (i + 0.5) / n) for i, tk in enumerate(ticks)]
    end = max(duration or 0.0, ticks[-1]["t"])
    points.append((end, 1.0) if end > ticks[-1]["t"] else (ticks[-1]["t"], (n - 0.5) / n))
    for (t0, x0), (t1, x1) in pairwise(points):
        if t <= t1:
            return x1 if t1 <= t0 else x0 + (x1 - x0) * (max(t, t0) - t0) / (t1 - t0)
    return points[-1][1]


def occlusion(analysis: Analysis | None, upload: Upload | None = None) -> dict[str, Any] | None:
    """The hand-over-face check of a video for the evidence page: its events in words, each with
    its band on the frame timeline (`x_left`, `x_width`: percentages of the timeline's width;
    `x_peak`: where the peak falls, as a percentage of the band's width); None for an image or an
    analysis without the check."""
    if analysis is None or (upload is not None and upload.kind != "video"):
        return None
    occ = words.read(analysis.evidence)
    if occ is None:
        return None
    ticks = timeline(analysis)
    duration = ((analysis.evidence or {}).get("media") or {}).get("duration")
    duration = duration if isinstance(duration, int | float) else None
    events = []
    for i, e in enumerate(occ["events"]):
        left, right, peak = (100 * timeline_position(e[k], ticks, duration) for k in ("start", "end", "peak"))
        width = max(right - left, BAND_MIN_WIDTH)
        events.append({**e, "n": i + 1, "pasted": words.pasted(e["score"]), "text": words.event_text(e),
                       "x_left": min(left, 100 - width), "x_width": width,
                       "x_peak": min(100.0, max(0.0, 100 * (peak - min(left, 100 - width)) / width))})
    return {**occ, "events": events, "headline": words.headline(occ), "pasted": words.overall(occ)}


def live(analysis: Analysis | None) -> dict[str, Any] | None:
    """The live session an item came from (core/live.py): its segments in call time, each with
    its score, label and hand-over-the-face events; None for an upload."""
    data = ((analysis.evidence or {}).get("live") if analysis is not None else None) or None
    if not isinstance(data, dict) or not isinstance(data.get("segments"), list):
        return None
    rows = []
    for seg in data["segments"]:
        events = ((seg.get("occlusion") or {}).get("events")) or []
        rows.append({"seq": seg.get("seq"), "start": seg.get("start") or 0.0, "duration": seg.get("duration"),
                     "state": seg.get("state"), "label": seg.get("label"), "score": seg.get("score"),
                     "faces": seg.get("faces"),
                     "events": [{"at": e.get("at"), "covered": e.get("covered"), "score": e.get("score"),
                                 "pasted": words.pasted(e.get("score"))} for e in events]})
    return {"session_id": data.get("session_id"), "segments": rows}


def file_facts(upload: Upload, analysis: Analysis | None) -> dict[str, Any]:
    media = ((analysis.evidence or {}).get("media") or {}) if analysis else {}
    return {"type": upload.mime, "kind": upload.kind, "bytes": upload.bytes, "sha256": upload.sha256,
            "width": media.get("width") or upload.width, "height": media.get("height") or upload.height,
            "duration": media.get("duration") or upload.duration, "format": media.get("format"),
            "codec": media.get("codec"), "rotation": media.get("rotation"),
            "frames_sampled": len(frames_of(analysis)), "filename": upload.filename}


# --- files ----------------------------------------------------------------------------------

def cache_dir(settings, *parts: str) -> Path:
    d = Path(settings.data_dir) / "cache" / "review"
    for p in parts:
        d = d / p
    d.mkdir(parents=True, exist_ok=True)
    return d


def blob_path(storage, settings, sha256: str) -> Path:
    """A local path to the blob: the file store's own file, or a cached copy from S3. Raises
    BlobNotFound when the blob is gone (the platform withdrew the upload)."""
    if hasattr(storage, "path_for"):
        path = storage.path_for(sha256)
        if not path.is_file():
            raise BlobNotFound(sha256)
        return path
    dest = cache_dir(settings, "blobs") / sha256
    if not dest.is_file():
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".dl-")
        os.close(fd)
        try:
            storage.get_to_file(sha256, Path(tmp))
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return dest


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".crop-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _crop(rgb, box: list[float], side: int) -> bytes:
    h, w = rgb.shape[:2]
    x1, y1, x2, y2 = box
    m = CROP_MARGIN * max(x2 - x1, y2 - y1)
    x1, y1 = max(0, int(x1 - m)), max(0, int(y1 - m))
    x2, y2 = min(w, int(x2 + m)), min(h, int(y2 + m))
    im = Image.fromarray(rgb[y1:max(y2, y1 + 1), x1:max(x2, x1 + 1)])
    im.thumbnail((side, side))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def crop_path(settings, analysis: Analysis, face: TopFace) -> Path:
    key = hashlib.sha256(f"{analysis.sha256}:{face.frame_index}:{face.timestamp}:{face.box}".encode()).hexdigest()
    return cache_dir(settings, "crops", key[:2]) / f"{key}.jpg"


def ensure_crops(storage, settings, upload: Upload, analysis: Analysis, faces: list[TopFace],
                 side: int = defaults.REVIEW_CROP_SIDE) -> None:
    """Cut every missing crop in one decode of the media (one pass over a video)."""
    missing = [f for f in faces if f.box and not crop_path(settings, analysis, f).is_file()]
    if not missing:
        return
    from detector import media

    src = blob_path(storage, settings, upload.sha256)
    if upload.kind == "image":
        rgb, _ = media.load_image(src)
        for f in missing:
            _write_atomic(crop_path(settings, analysis, f), _crop(rgb, f.box, side))
        return
    n = max(1, len(frames_of(analysis)))
    # The same sampling as the worker's: the frame index matches; if it drifted (another PyAV,
    # another frame count setting), the frame nearest in time stands in.
    best: dict[int, tuple[float, bytes]] = {}
    for frame in media.sample_video(src, n=n):
        for f in missing:
            dt = 0.0 if f.frame_index == frame.index else abs(f.timestamp - frame.timestamp) + 1e-6
            if id(f) not in best or dt < best[id(f)][0]:
                best[id(f)] = (dt, _crop(frame.image, f.box, side))
    for f in missing:
        if id(f) in best:
            _write_atomic(crop_path(settings, analysis, f), best[id(f)][1])
