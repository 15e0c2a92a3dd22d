"""Reading untrusted media: sniffing, probing and decoding, with every cap enforced.

Images go through Pillow (format allowlist, pixel cap before any pixel is decoded, EXIF
orientation, first frame of a GIF); videos through PyAV (container and codec allowlist, caps on
streams, resolution, duration and decoded frames, rotation metadata), sampling N frames evenly
over the duration without keeping the decoded frames. Every refusal is an `UnreadableMedia`
with a short machine reason and a human message; nothing here lets a decoder error escape.
"""

from __future__ import annotations

import io
import math
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import av
import filetype
import numpy as np
from PIL import Image, ImageOps

from detector import limits
from detector.result import MediaInfo

IMAGE_MIMES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP", "image/gif": "GIF"}
VIDEO_MIMES = {"video/mp4", "video/quicktime", "video/webm", "video/x-matroska"}
VIDEO_CODECS = {"h264", "hevc", "vp9", "av1", "vp8", "mpeg4"}
"""Decoders we let PyAV use on untrusted input (the issue's H.264, HEVC, VP9, AV1, plus the
ubiquitous VP8 in WebM and MPEG-4 Part 2 in old phone MP4s)."""

SNIFF_BYTES = 8192
"""Bytes read from the start of a file to recognise its type."""

SEEK_MIN_GAP = 3.0
"""Seconds: jump to a keyframe only when it lies at least this far ahead of the decoder. Closer
targets are reached faster by decoding straight on (non-reference frames skipped) than by
flushing the decoder and restarting its threads at every keyframe."""


class UnreadableMedia(Exception):
    """The file cannot be analysed: not an allowed type, corrupt, or over a cap."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


@dataclass(slots=True)
class Frame:
    index: int
    timestamp: float
    image: np.ndarray
    """RGB uint8 (H, W, 3), rotation applied."""


def sniff(head: bytes) -> tuple[str, str] | None:
    """(kind, mime) when the bytes start like an allowed format, else None."""
    if not head:
        return None
    kind = filetype.guess(head[:SNIFF_BYTES])
    if kind is None:
        return None
    if kind.mime in IMAGE_MIMES:
        return "image", kind.mime
    if kind.mime in VIDEO_MIMES:
        return "video", kind.mime
    if kind.mime == "video/x-m4v":
        return "video", "video/mp4"
    return None


def _open_source(src: str | os.PathLike | bytes | BinaryIO):
    if isinstance(src, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(src))
    return src


def _head(src) -> bytes:
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src[:SNIFF_BYTES])
    if hasattr(src, "read"):
        pos = src.tell()
        data = src.read(SNIFF_BYTES)
        src.seek(pos)
        return data
    with open(src, "rb") as f:
        return f.read(SNIFF_BYTES)


def identify(src) -> tuple[str, str]:
    """(kind, mime) of a file or bytes, or UnreadableMedia(empty|unsupported_type)."""
    head = _head(src)
    if not head:
        raise UnreadableMedia("empty", "the file is empty")
    found = sniff(head)
    if found is None:
        raise UnreadableMedia(
            "unsupported_type",
            "not an allowed image (JPEG, PNG, WebP, GIF) or video (MP4, MOV, WebM, MKV)",
        )
    return found


# --- images ---------------------------------------------------------------------------------

def _open_image(src, max_pixels: int) -> Image.Image:
    formats = list(IMAGE_MIMES.values())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(_open_source(src), formats=formats)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # Pillow's own guard fired before ours (it reads the size from the header too): say it
        # in Verity's terms, with Verity's cap, not Pillow's internal one.
        m = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(m.group(1)):,} pixels" if m else "the image"
        raise UnreadableMedia("too_many_pixels", f"{size} is over the cap of {max_pixels:,}") from e
    except Exception as e:  # UnidentifiedImageError, OSError, SyntaxError from plugins...
        raise UnreadableMedia("corrupt_image", f"the image header cannot be read ({e})") from e
    w, h = im.size
    if w <= 0 or h <= 0:
        raise UnreadableMedia("corrupt_image", f"the image declares an empty size {w}x{h}")
    if w * h > max_pixels:
        raise UnreadableMedia(
            "too_many_pixels", f"{w}x{h} = {w * h:,} pixels is over the cap of {max_pixels:,}"
        )
    return im


def probe_image(src, max_pixels: int = limits.MAX_IMAGE_PIXELS) -> MediaInfo:
    """Header-only check: the image opens and is under the pixel cap."""
    im = _open_image(src, max_pixels)
    return MediaInfo(kind="image", format=im.format or "", width=im.size[0], height=im.size[1])


def load_image(src, max_pixels: int = limits.MAX_IMAGE_PIXELS) -> tuple[np.ndarray, MediaInfo]:
    """Decode an image to RGB uint8 with EXIF orientation applied (first frame of a GIF)."""
    im = _open_image(src, max_pixels)
    fmt = im.format or ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)
            im.load()
            orientation = im.getexif().get(0x0112, 1)
            rotation = {3: 180, 6: 270, 8: 90}.get(orientation, 0)
            if orientation not in (None, 1):
                im = ImageOps.exif_transpose(im)
            # An RGB image is used as decoded: convert() would copy 6 MB for a 1080p photo.
            rgb = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
    except UnreadableMedia:
        raise
    except Exception as e:  # truncated data, bad EXIF, decoder errors
        raise UnreadableMedia("corrupt_image", f"the image cannot be decoded ({e})") from e
    info = MediaInfo(kind="image", format=fmt, width=rgb.shape[1], height=rgb.shape[0],
                     frame_count=1, rotation=rotation)
    return rgb, info


# --- video ----------------------------------------------------------------------------------

def _open_video(src):
    try:
        container = av.open(_open_source(src), mode="r", timeout=30)
    except Exception as e:  # av.error.InvalidDataError and friends
        raise UnreadableMedia("corrupt_video", f"the video container cannot be read ({e})") from e
    return container


def _video_stream(container, max_streams: int, max_pixels: int, max_seconds: float):
    if len(container.streams) > max_streams:
        raise UnreadableMedia(
            "too_many_streams", f"{len(container.streams)} streams (cap {max_streams})"
        )
    if not container.streams.video:
        raise UnreadableMedia("no_video_stream", "the container has no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise UnreadableMedia("unsupported_codec", "the video stream's codec is unknown")
    codec = stream.codec_context.name
    if codec not in VIDEO_CODECS:
        raise UnreadableMedia("unsupported_codec", f"video codec {codec!r} is not allowed")
    w, h = stream.codec_context.width, stream.codec_context.height
    if not w or not h:
        raise UnreadableMedia("corrupt_video", "the video stream declares no frame size")
    if w * h > max_pixels:
        raise UnreadableMedia("too_many_pixels", f"{w}x{h} frames are over the cap of {max_pixels:,} pixels")
    duration = _duration(container, stream)
    if duration is not None and duration > max_seconds:
        raise UnreadableMedia("too_long", f"{duration:.0f} s is over the cap of {max_seconds:.0f} s")
    return stream, duration


def _duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        d = float(stream.duration * stream.time_base)
        if d > 0:
            return d
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _rotation(stream) -> int:
    for frame_like in (stream,):
        rot = frame_like.metadata.get("rotate") if frame_like.metadata else None
        if rot:
            try:
                return int(rot) % 360
            except ValueError:
                pass
    return 0


def probe_video(src, max_streams: int = limits.MAX_VIDEO_STREAMS,
                max_pixels: int = limits.MAX_VIDEO_PIXELS,
                max_seconds: float = limits.MAX_VIDEO_SECONDS) -> MediaInfo:
    """Header-only check of a video: allowed container/codec, under every cap."""
    container = _open_video(src)
    try:
        stream, duration = _video_stream(container, max_streams, max_pixels, max_seconds)
        return MediaInfo(kind="video", format=container.format.name, width=stream.codec_context.width,
                         height=stream.codec_context.height, duration=duration,
                         codec=stream.codec_context.name, frame_count=stream.frames or None,
                         rotation=_rotation(stream))
    finally:
        container.close()


def probe(src, kind: str | None = None) -> MediaInfo:
    """Identify and header-check a file or bytes; raises UnreadableMedia."""
    if kind is None:
        kind, _ = identify(src)
    return probe_image(src) if kind == "image" else probe_video(src)


def decode_sample(src, kind: str, frames: int = 2) -> None:
    """Decode the media, not only its header: all of an image, the first `frames` sampled frames
    of a video; raises UnreadableMedia for a truncated or corrupt file."""
    if kind == "image":
        load_image(src)
        return
    got = 0
    for _ in sample_video(src, frames):
        got += 1
    if got == 0:
        raise UnreadableMedia("corrupt_video", "no frame of the video could be decoded")


def _frame_rgb(frame, rotation_hint: int) -> tuple[np.ndarray, int]:
    rgb = frame.to_ndarray(format="rgb24")
    rot = getattr(frame, "rotation", 0) or rotation_hint
    # PyAV's rotation is the display matrix angle, counter-clockwise in degrees.
    rot = round(rot) % 360
    if rot:
        rgb = np.ascontiguousarray(np.rot90(rgb, k=rot // 90))
    return rgb, rot


def sample_video(src, n: int = limits.DEFAULT_SAMPLED_FRAMES, *,
                 max_decoded: int = limits.MAX_DECODED_FRAMES,
                 max_streams: int = limits.MAX_VIDEO_STREAMS,
                 max_pixels: int = limits.MAX_VIDEO_PIXELS,
                 max_seconds: float = limits.MAX_VIDEO_SECONDS,
                 info_out: list | None = None,
                 dense: tuple[float, float, int] | None = None) -> Iterator[Frame]:
    """Yield about n frames spread evenly over the video, one at a time.

    `dense` = (fps, max_seconds, max_frames): a video no longer than max_seconds is sampled at
    least fps frames a second (at most max_frames), for the checks that need nearby frames.

    Frames are decoded in order and only the chosen ones are converted to RGB, so memory stays
    at one frame whatever the length. Targets are the midpoints of n equal slices of the
    duration; each is served by the first frame at or after it. When the duration is unknown,
    the first n frames are returned.
    """
    container = _open_video(src)
    try:
        stream, duration = _video_stream(container, max_streams, max_pixels, max_seconds)
        stream.thread_type = "AUTO"
        rotation_hint = _rotation(stream)
        info = MediaInfo(kind="video", format=container.format.name, width=stream.codec_context.width,
                         height=stream.codec_context.height, duration=duration,
                         codec=stream.codec_context.name, frame_count=stream.frames or None,
                         rotation=rotation_hint)
        if info_out is not None:
            info_out.append(info)
        tb = stream.time_base
        start = float(stream.start_time * tb) if stream.start_time is not None else 0.0
        if dense and duration and duration <= dense[1]:
            n = max(n, min(dense[2], math.ceil(duration * dense[0])))
        targets = [start + duration * (i + 0.5) / n for i in range(n)] if duration else None
        if targets and stream.frames and stream.frames / n > 4:
            # Far more frames than samples: non-reference frames are never needed (~20-50% less decoding).
            stream.codec_context.skip_frame = "NONREF"
        keyframes = _keyframe_times(stream) if targets else []
        rate = stream.average_rate or stream.guessed_rate
        state = {"decoded": 0, "pos": float("-inf"), "rate": float(rate) if rate else None}
        emitted = 0
        try:
            if targets is None:
                for frame, ts in _decode(container, stream, state, max_decoded):
                    yield _to_frame(frame, ts, start, state, info, rotation_hint, emitted == 0)
                    emitted += 1
                    if emitted >= n:
                        break
            else:
                gen = _decode(container, stream, state, max_decoded)
                i = 0
                last = None
                while i < len(targets):
                    target = targets[i]
                    k = _last_at_or_before(keyframes, target)
                    if k is not None and k > state["pos"] + SEEK_MIN_GAP and state["decoded"]:
                        # A keyframe lies between where we are and the target: jump to it.
                        container.seek(round(k / tb), stream=stream, backward=True, any_frame=False)
                        gen = _decode(container, stream, state, max_decoded)
                    got = None
                    for frame, ts in gen:
                        last = (frame, ts)
                        if ts + 1e-6 >= target:
                            got = (frame, ts)
                            break
                    if got is None:
                        if emitted == 0 and last is not None:
                            # Shorter than its first target (e.g. a one-frame clip): use what exists.
                            yield _to_frame(*last, start, state, info, rotation_hint, True)
                            emitted += 1
                        break
                    frame, ts = got
                    while i < len(targets) and ts + 1e-6 >= targets[i]:
                        i += 1
                    yield _to_frame(frame, ts, start, state, info, rotation_hint, emitted == 0)
                    emitted += 1
        except UnreadableMedia:
            raise
        except Exception as e:  # av errors mid-stream: keep what was decoded if anything
            if emitted == 0:
                raise UnreadableMedia("corrupt_video", f"no frame could be decoded ({e})") from e
        if emitted == 0:
            raise UnreadableMedia("corrupt_video", "the video has no decodable frame")
    finally:
        container.close()


def _keyframe_times(stream) -> list[float]:
    """Keyframe timestamps (seconds) from the container index; empty when there is none."""
    try:
        entries = stream.index_entries
        tb = float(stream.time_base)
        return sorted(e.timestamp * tb for e in entries if e.is_keyframe)
    except Exception:  # noqa: BLE001 - no usable index (older PyAV, odd container): sample without it
        return []


def _last_at_or_before(times: list[float], t: float) -> float | None:
    import bisect

    i = bisect.bisect_right(times, t + 1e-6)
    return times[i - 1] if i else None


def _decode(container, stream, state: dict, max_decoded: int):
    """Decoded frames with their timestamps (seconds), counting against the decode cap."""
    tb = stream.time_base
    for frame in container.decode(stream):
        state["decoded"] += 1
        if state["decoded"] > max_decoded:
            raise UnreadableMedia("too_many_frames", f"more than {max_decoded} frames decoded")
        ts = float(frame.pts * tb) if frame.pts is not None else state["pos"] + 1e-3
        state["pos"] = ts
        yield frame, ts


def _to_frame(frame, ts: float, start: float, state: dict, info: MediaInfo, rotation_hint: int,
              first: bool) -> Frame:
    rgb, rot = _frame_rgb(frame, rotation_hint)
    info.rotation = rot
    if first:
        info.height, info.width = rgb.shape[:2]

    rate = state.get("rate")
    index = round((ts - start) * rate) if rate else state["decoded"] - 1
    return Frame(index=index, timestamp=round(ts - start, 3), image=rgb)
