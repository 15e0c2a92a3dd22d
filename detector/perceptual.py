"""Perceptual hashes of media, to recognise a known file after re-encoding, resizing, cropping or
mirroring: PDQ for images (Meta's algorithm, from the `pdqhash` package) and vPDQ for videos
(PDQ of frames sampled about once a second, matched by the share of frames that find a partner).

The hash strings are those of Meta's ThreatExchange and HMA: a PDQ hash is 64 hex characters
(256 bits); a vPDQ hash is a list of "<pdq hex>,<quality>,<timestamp>" strings
(`threatexchange.extensions.vpdq`). The thresholds are theirs too.

Images are downscaled so that their longer side is at most PDQ_MAX_SIDE before hashing, as the
reference hasher does for speed (PDQ itself works on a 64x64 reduction): a few ms instead of
50-300 ms for a large photo, a few bits of difference.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from detector import limits, media

PDQ_MAX_SIDE = 512
"""Longer side an image is reduced to before PDQ hashing."""

PDQ_MATCH_DISTANCE = 31
"""Hamming distance (of 256 bits) at or under which two PDQ hashes are the same picture (Meta's
recommended threshold)."""

PDQ_NEAR_DISTANCE = 63
"""At or under this (and over PDQ_MATCH_DISTANCE): a near miss, worth a human look."""

PDQ_MIN_QUALITY = 50
"""PDQ quality (0-100) under which a hash is too featureless to match on (flat images, black frames)."""

ENTRY_BORDER_TRIMS = (0.02, 0.04, 0.06)
"""A bank entry also keeps the PDQ of its picture with these shares trimmed off every side: a
re-upload with its borders cropped (up to ~7% a side) then stays within PDQ_MATCH_DISTANCE of
one of them. (PDQ is not shift-invariant: a crop from one corner that moves the content by 5%
of the picture is 60-100 bits away, out of reach.)"""

VPDQ_SECONDS_PER_HASH = 1.0
"""vPDQ hashes one frame per second of video."""

VPDQ_MAX_FRAMES = 300
"""At most this many frames are hashed per video (spread evenly over a longer one)."""

VPDQ_QUERY_MATCH_PERCENT = 80.0
"""A video matches an entry when at least this share of its (quality, distinct) frames has a
partner within PDQ_MATCH_DISTANCE among the entry's frames (ThreatExchange's default)."""


@dataclass(frozen=True)
class PdqHash:
    hex: str
    quality: int

    def bits(self) -> np.ndarray:
        return hex_to_bytes(self.hex)


@dataclass(frozen=True)
class VpdqFrame:
    hex: str
    quality: int
    timestamp: float

    def __str__(self) -> str:
        return f"{self.hex},{self.quality},{self.timestamp:.3f}"

    @classmethod
    def parse(cls, text: str) -> VpdqFrame:
        hex_, quality, timestamp = text.split(",")
        check_pdq_hex(hex_)
        q = int(quality)
        if not 0 <= q <= 100 or float(timestamp) < 0:
            raise ValueError(f"invalid vPDQ frame {text!r}")
        return cls(hex_.lower(), q, float(timestamp))


@dataclass(frozen=True)
class MediaHashes:
    """What the bank matches on: an image's PDQ hash with its 7 rotations and mirror images
    (`pdq[0]` is the picture as it is), or a video's frames."""

    pdq: list[PdqHash] = field(default_factory=list)
    vpdq: list[VpdqFrame] = field(default_factory=list)
    trims: list[PdqHash] = field(default_factory=list)
    """For a bank entry: the PDQ of the picture with its borders trimmed (ENTRY_BORDER_TRIMS)."""

    def to_dict(self) -> dict:
        out: dict = {}
        if self.pdq:
            out["pdq"] = [h.hex for h in self.pdq]
            out["pdq_quality"] = self.pdq[0].quality
        if self.vpdq:
            out["vpdq"] = [str(f) for f in self.vpdq]
        return out

    @classmethod
    def from_dict(cls, d: dict | None) -> MediaHashes | None:
        if not d or not (d.get("pdq") or d.get("vpdq")):
            return None
        q = int(d.get("pdq_quality", 0))
        return cls(pdq=[PdqHash(check_pdq_hex(h), q) for h in d.get("pdq") or []],
                   vpdq=[VpdqFrame.parse(f) for f in d.get("vpdq") or []])


def check_pdq_hex(value: str) -> str:
    if len(value) != 64 or any(c not in "0123456789abcdefABCDEF" for c in value):
        raise ValueError(f"not a PDQ hash (64 hex characters): {value[:80]!r}")
    return value.lower()


def hex_to_bytes(value: str) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(value), dtype=np.uint8)


def _bits_to_hex(bits: np.ndarray) -> str:
    """pdqhash's 256 0/1 values, first one most significant -> the hex string ThreatExchange
    and HMA use (threatexchange.signal_type.pdq.pdq_hasher)."""
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()


def hamming(a: str, b: str) -> int:
    return int(np.unpackbits(hex_to_bytes(a) ^ hex_to_bytes(b)).sum())


def _reduced(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    if max(h, w) <= PDQ_MAX_SIDE:
        return np.ascontiguousarray(rgb)
    scale = PDQ_MAX_SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # reducing_gap=1: a box filter by the whole factor first, then a small bilinear step (as the
    # face detector's prepare()): 4 ms instead of 8 for 720p, hashes within 2 bits of a plain
    # bilinear resize and as robust to re-encoding and rescaling (measured on 24 pictures).
    return np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR, reducing_gap=1.0))


def pdq_of_rgb(rgb: np.ndarray) -> PdqHash:
    import pdqhash

    bits, quality = pdqhash.compute(_reduced(rgb))
    return PdqHash(_bits_to_hex(bits), int(quality))


def pdq_dihedral(rgb: np.ndarray) -> list[PdqHash]:
    """The hash of the picture and of its 7 rotations and mirror images (a mirrored re-upload
    still matches when the query is searched with all eight)."""
    import pdqhash

    hashes, quality = pdqhash.compute_dihedral(_reduced(rgb))
    return [PdqHash(_bits_to_hex(h), int(quality)) for h in hashes]


def pdq_trims(rgb: np.ndarray) -> list[PdqHash]:
    h, w = rgb.shape[:2]
    out = []
    for f in ENTRY_BORDER_TRIMS:
        dy, dx = int(h * f), int(w * f)
        out.append(pdq_of_rgb(rgb[dy:h - dy, dx:w - dx]))
    return out


def pdq_of_image(src: str | os.PathLike | bytes, max_pixels: int = limits.MAX_IMAGE_PIXELS) -> PdqHash:
    rgb, _ = media.load_image(src, max_pixels)
    return pdq_of_rgb(rgb)


def vpdq_of_video(src: str | os.PathLike | bytes, max_frames: int = VPDQ_MAX_FRAMES) -> list[VpdqFrame]:
    """PDQ of about one frame per second (at most `max_frames`, evenly spread)."""
    info = media.probe_video(src)
    seconds = info.duration or 0.0
    n = int(max(1, min(max_frames, round(seconds / VPDQ_SECONDS_PER_HASH) or 1)))
    return [VpdqFrame(h.hex, h.quality, round(f.timestamp, 3))
            for f in media.sample_video(src, n) for h in [pdq_of_rgb(f.image)]]


def usable(frames: list[VpdqFrame], min_quality: int = PDQ_MIN_QUALITY) -> list[VpdqFrame]:
    """Frames good enough to match on, each distinct hash once (as ThreatExchange dedupes)."""
    seen: set[str] = set()
    out = []
    for f in frames:
        if f.quality >= min_quality and f.hex not in seen:
            seen.add(f.hex)
            out.append(f)
    return out


def hash_media(src: str | os.PathLike | bytes, kind: str, *, for_entry: bool = False) -> MediaHashes:
    """Decode and hash a file on its own (the bank's CLI and a new entry; the worker gets an
    upload's hashes from the detector's own decode instead). `for_entry` adds the border trims.
    Raises media.UnreadableMedia."""
    if kind == "image":
        rgb, _ = media.load_image(src)
        return MediaHashes(pdq=pdq_dihedral(rgb), trims=pdq_trims(rgb) if for_entry else [])
    return MediaHashes(vpdq=vpdq_of_video(src))
