"""`models/<name>/model.json`: everything the runtime needs to know to use a classifier.

The manifest is the contract between training/ (which writes it) and the runtime (which reads
it). An operator can drop in their own ONNX model by writing one of these next to it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_MODEL = "verity-sbi"
"""Model used when none is named (VERITY_MODEL unset)."""


class ManifestError(Exception):
    """The model manifest or its file is missing, malformed, or does not match its checksum."""


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "input"
    size: int = Field(gt=15, le=1024)
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    color: Literal["RGB", "BGR"] = "RGB"
    scale: float = 255.0
    """Pixels are divided by this first, then normalised with mean/std."""
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    """Per channel, always in R, G, B order (also when `color` is BGR: the runtime reorders them)."""


class CropSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    margin: float = Field(default=1.3, ge=1.0, le=3.0)
    """Side of the square crop as a multiple of the larger face-box side."""
    align: bool = False
    """Rotate the crop so that the eyes are level (from the detector's landmarks)."""


class OutputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "logit"
    kind: Literal["logit", "probability", "logits2"] = "logit"
    """logit: one value per crop, sigmoid gives P(fake); probability: P(fake) directly;
    logits2: two values per crop (real, fake), softmax gives P(fake)."""
    meaning: str = "manipulated face"


class Calibration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: Literal["none", "temperature"] = "none"
    temperature: float = Field(default=1.0, gt=0)


def _check_margins(v: list[float], name: str) -> list[float]:
    if any(not 1.0 <= m <= 3.0 for m in v):
        raise ValueError(f"{name} must each lie in [1.0, 3.0], got {v}")
    if len(set(v)) != len(v):
        raise ValueError(f"{name} must not repeat a margin, got {v}")
    return v


class VideoViews(BaseModel):
    """The views of a face in a video frame (a file's sampled frames, a live segment), where they
    differ from a photo's: a video scores dozens of frames, so a larger model (an ensemble) may
    look at each frame's face fewer ways and still hold issue 2's time limit. The video
    calibration (`video`) is fitted with these views in place (training/video_eval.py)."""

    model_config = ConfigDict(extra="forbid")
    hflip: bool = False
    """Also classify each crop mirrored (as `tta.hflip`, for video frames)."""
    margins: list[float] = Field(default_factory=list)
    """Further crop margins besides `crop.margin` (as `tta.margins`, for video frames)."""

    @field_validator("margins")
    @classmethod
    def _margins(cls, v: list[float]) -> list[float]:
        return _check_margins(v, "tta.video.margins")


class TestTimeAugmentation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hflip: bool = False
    """Also classify each crop mirrored left-right and average the two raw outputs (logits).
    Doubles the classifier's batch; training/export.py turns it on only when it raised the
    validation AUC, and fits the temperature and thresholds on the averaged outputs."""
    margins: list[float] = Field(default_factory=list)
    """More crop margins besides `crop.margin`: each face is also cropped at each of them and the
    raw outputs of all its crops (and, with hflip, their mirrors) are averaged. Each margin adds
    one more crop per face to the classifier's batch. A picture calibration (`picture`) and the
    thresholds are read on the averaged outputs, so they are fitted with the margins in place."""

    video: VideoViews | None = None
    """Video frames only: their own views (VideoViews); None: the same views as a photo."""

    @field_validator("margins")
    @classmethod
    def _margins(cls, v: list[float]) -> list[float]:
        return _check_margins(v, "tta.margins")


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")
    review: float = Field(ge=0, le=1)
    block: float = Field(ge=0, le=1)

    @field_validator("block")
    @classmethod
    def _block_above_review(cls, v: float, info) -> float:
        review = info.data.get("review")
        if review is not None and v < review:
            raise ValueError("block threshold must be >= review threshold")
        return v


class VideoSpec(BaseModel):
    """How a video's sampled frames make one score (detector/aggregate.py)."""

    model_config = ConfigDict(extra="forbid")
    aggregate: Literal["top_k", "track_top_k", "track_mean"] = "top_k"
    """top_k: the mean of the k highest frame scores, whoever's face they are (no calibration);
    track_top_k: per person (face track), the mean logit of their k highest frames; track_mean:
    per person, the mean logit over all their frames; both then take the highest person and the
    video calibration below."""
    offset: float = 0.0
    temperature: float = Field(default=1.0, gt=0)
    """track_* only: score = sigmoid((mean logit - offset) / temperature), fitted on real videos so
    that the photo thresholds mean for a video what they mean for a photo."""
    fitted_on: str = ""
    """Which real videos the calibration was fitted on."""


class PictureSpec(BaseModel):
    """How a still picture's faces make one score (detector/aggregate.py `picture_score`).

    max: the highest face score, as it is. count_adjusted: the highest face's calibrated logit,
    read as a standard score against the model's real faces (`reference_mean`, `reference_std`),
    is corrected for the number of faces in the picture (the chance that at least one of n real
    faces lies that far out), then given back on the same scale: one face keeps its score, and a
    picture of four real people no longer has four chances to cross the model's thresholds.
    size_adjusted: the same, but each face is first read against the real faces of its own width
    (`mean`, `std` at the face widths `widths`, linear in log width between them, flat beyond)."""

    model_config = ConfigDict(extra="forbid")
    aggregate: Literal["max", "count_adjusted", "size_adjusted"] = "max"
    reference_mean: float = 0.0
    reference_std: float = Field(default=1.0, gt=0)
    """The model's real faces' calibrated logits: their mean and standard deviation."""
    widths: list[float] = Field(default_factory=list)
    """size_adjusted only: face-box widths in pixels (ascending) at which the real faces' logits
    were measured, and their mean and standard deviation there."""
    mean: list[float] = Field(default_factory=list)
    std: list[float] = Field(default_factory=list)
    fitted_on: str = ""
    """Which real pictures the adjustment was fitted on."""

    @model_validator(mode="after")
    def _knots(self) -> PictureSpec:
        if self.aggregate != "size_adjusted":
            return self
        n = len(self.widths)
        if n == 0 or len(self.mean) != n or len(self.std) != n:
            raise ValueError("size_adjusted needs widths, mean and std of the same non-zero length")
        if any(b <= a for a, b in zip(self.widths, self.widths[1:])) or self.widths[0] <= 0:
            raise ValueError("widths must be positive and ascending")
        if any(v <= 0 for v in self.std):
            raise ValueError("std must be positive")
        return self


class DataSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    folder: str
    terms: str
    use: Literal["business", "research-only"]


class DataLicence(BaseModel):
    """Whose faces the model learnt from and what their terms allow (training/licences.py)."""

    model_config = ConfigDict(extra="forbid")
    use: Literal["business", "research-only"]
    """"business" only when every training folder allows it."""
    sources: list[DataSource]

    def summary(self) -> str:
        folders = ", ".join(f"{s.folder} ({s.terms})" for s in self.sources)
        return f"{self.use} use; trained on {folders}"


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    version: str
    file: str = "model.onnx"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    input: InputSpec
    crop: CropSpec = CropSpec()
    output: OutputSpec = OutputSpec()
    calibration: Calibration = Calibration()
    tta: TestTimeAugmentation = TestTimeAugmentation()
    thresholds: Thresholds
    training: dict = Field(default_factory=dict)
    metrics: dict = Field(default_factory=dict)
    video: VideoSpec = VideoSpec()
    picture: PictureSpec = PictureSpec()
    data_licence: DataLicence | None = None
    """None for a model.json from before the field: its licence is unknown (say so, never assume)."""

    path: Path | None = Field(default=None, exclude=True)
    """Directory the manifest was read from (not part of the file)."""

    @property
    def licence_text(self) -> str:
        """The running model's data licence in one line (doctor, startup log, /readyz)."""
        return self.data_licence.summary() if self.data_licence else "unknown: model.json has no data_licence"

    @property
    def crop_margins(self) -> tuple[float, ...]:
        """Every margin a face is cropped at: crop.margin first, then tta.margins."""
        return self._with_crop_margin(self.tta.margins)

    @property
    def video_crop_margins(self) -> tuple[float, ...]:
        """The margins a face in a video frame is cropped at (tta.video, else as a photo's)."""
        return self.crop_margins if self.tta.video is None else self._with_crop_margin(self.tta.video.margins)

    def _with_crop_margin(self, further: list[float]) -> tuple[float, ...]:
        return (self.crop.margin, *(m for m in further if m != self.crop.margin))

    @property
    def video_hflip(self) -> bool:
        """Whether a face in a video frame is also classified mirrored (tta.video, else tta.hflip)."""
        return self.tta.hflip if self.tta.video is None else self.tta.video.hflip

    @property
    def model_path(self) -> Path:
        assert self.path is not None
        return self.path / self.file


REPOSITORY_MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
"""The repository's `models/`, next to the installed packages: where named models are looked up
when no other folder is given (VERITY_MODELS_DIR)."""


def resolve_model_dir(model: str | os.PathLike | None, models_dir: str | os.PathLike | None = None) -> Path:
    """A model is named by a directory path, a path to its model.json, or a name under
    `models_dir` (default: the repository's models/); None names the shipped default."""
    if model is None or model == "":
        model = DEFAULT_MODEL
    p = Path(model)
    if p.name == "model.json":
        return p.parent
    if p.is_dir():
        return p
    where = Path(models_dir) if models_dir else REPOSITORY_MODELS_DIR
    candidate = where / str(model)
    if candidate.is_dir():
        return candidate
    raise ManifestError(f"model {str(model)!r} not found: not a directory and not under {where}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_manifest(model: str | os.PathLike | None = None, verify: bool = True,
                  models_dir: str | os.PathLike | None = None) -> Manifest:
    """Read and validate a manifest; with verify, refuse a model file whose sha256 differs."""
    directory = resolve_model_dir(model, models_dir)
    mpath = directory / "model.json"
    try:
        raw = json.loads(mpath.read_text())
    except FileNotFoundError as e:
        raise ManifestError(f"{mpath} does not exist") from e
    except json.JSONDecodeError as e:
        raise ManifestError(f"{mpath} is not valid JSON: {e}") from e
    try:
        manifest = Manifest.model_validate(raw)
    except Exception as e:  # pydantic.ValidationError, with the field names in its message
        raise ManifestError(f"{mpath} is not a valid model manifest: {e}") from e
    manifest.path = directory
    if not manifest.model_path.is_file():
        raise ManifestError(f"model file {manifest.model_path} does not exist")
    if verify:
        actual = sha256_file(manifest.model_path)
        if actual != manifest.sha256:
            raise ManifestError(
                f"sha256 mismatch for {manifest.model_path}: manifest says {manifest.sha256}, "
                f"file is {actual}; refusing to load a model that is not the one described"
            )
    return manifest
