"""The detector's answer: a JSON-serialisable record of the score and the evidence behind it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Label(StrEnum):
    LIKELY_AUTHENTIC = "likely_authentic"
    SUSPECTED_FAKE = "suspected_fake"
    NO_FACE = "no_face"
    UNREADABLE = "unreadable"


@dataclass(slots=True)
class FaceEvidence:
    box: list[float]
    """x1, y1, x2, y2 in the pixels of the (rotation-corrected) frame."""
    landmarks: list[list[float]]
    """Five points: right eye, left eye, nose, right mouth corner, left mouth corner (image x, y)."""
    detection_score: float
    fake_score: float | None = None
    """Calibrated probability that this face is manipulated."""


@dataclass(slots=True)
class FrameEvidence:
    index: int
    """Frame number in the stream (0 for a still image)."""
    timestamp: float
    """Seconds from the start (0.0 for a still image)."""
    faces: list[FaceEvidence] = field(default_factory=list)

    @property
    def max_score(self) -> float | None:
        scores = [f.fake_score for f in self.faces if f.fake_score is not None]
        return max(scores) if scores else None


@dataclass(slots=True)
class MediaInfo:
    kind: str
    """"image" or "video"."""
    format: str
    """Container or image format as decoded ("JPEG", "mov,mp4,m4a,3gp,3g2,mj2", ...)."""
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    codec: str | None = None
    frame_count: int | None = None
    rotation: int = 0


@dataclass(slots=True)
class DetectionResult:
    label: Label
    score: float | None
    """Calibrated probability of a manipulated face; None when no face was scored."""
    reasons: list[str]
    model_name: str
    model_version: str
    provider: str
    media: MediaInfo | None = None
    frames: list[FrameEvidence] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    """Milliseconds per stage: decode, detect, classify, total (and hash, when asked for)."""
    hashes: dict[str, Any] | None = None
    """Perceptual hashes of the media when asked for (detector/perceptual.MediaHashes.to_dict)."""
    classifier_score: float | None = None
    """The item score from the face classifier alone (`score` adds the occlusion check to it)."""
    occlusion: dict[str, Any] | None = None
    """The hand-over-the-face check of a video (detector/occlusion.OcclusionResult.to_dict)."""

    @property
    def faces_seen(self) -> int:
        return sum(len(f.faces) for f in self.frames)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["label"] = str(self.label)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DetectionResult:
        frames = [
            FrameEvidence(
                index=f["index"],
                timestamp=f["timestamp"],
                faces=[FaceEvidence(**face) for face in f.get("faces", [])],
            )
            for f in d.get("frames", [])
        ]
        media = MediaInfo(**d["media"]) if d.get("media") else None
        return cls(
            label=Label(d["label"]),
            score=d.get("score"),
            reasons=list(d.get("reasons", [])),
            model_name=d["model_name"],
            model_version=d["model_version"],
            provider=d["provider"],
            media=media,
            frames=frames,
            timings_ms=dict(d.get("timings_ms", {})),
            hashes=d.get("hashes"),
            classifier_score=d.get("classifier_score", d.get("score")),
            occlusion=d.get("occlusion"),
        )
