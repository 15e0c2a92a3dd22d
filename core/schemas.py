"""Request and response schemas of the platform API (pydantic); the OpenAPI document is built
from these (app/api/openapi.py) and the responses are produced through them, so the spec and the
server cannot drift apart."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from core import defaults


def _utc(value: datetime) -> datetime:
    """Stored times are UTC; SQLite hands them back without a zone."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDateTime = Annotated[datetime, AfterValidator(_utc)]
"""A time in the API: RFC 3339 in UTC, with its `Z` (`2026-12-06T00:06:07.886439Z`)."""

Decision = Literal["allow", "review", "block"]
Event = Literal["upload.analyzed", "upload.decided", "upload.failed"]


class Error(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. `unauthorized`, `rate_limited`.")
    message: str
    request_id: str


class Links(BaseModel):
    self: str


class ModelRef(BaseModel):
    name: str
    version: str


class FrameSummary(BaseModel):
    index: int
    timestamp: float
    faces: int
    score: float | None


class EvidenceSummary(BaseModel):
    frames_analyzed: int
    frames_with_faces: int
    faces: int
    top_frames: list[FrameSummary] = Field(description="The highest-scoring frames, best first (at most 5).")


class MatchOut(BaseModel):
    """A known-fakes bank entry this upload matched (before the detector's word)."""

    entry_id: str
    algorithm: Literal["sha256", "pdq", "vpdq"]
    distance: int | None = Field(description="PDQ Hamming distance of 256 bits (<= 31: the same picture); "
                                             "0 for sha256.")
    match_percent: float | None = Field(default=None, description="vPDQ: the share of the video's frames "
                                                                  "that found a partner in the entry.")
    source: Literal["decision", "cli", "import"]
    near: bool = Field(description="A near miss (PDQ 32-63): sent to review, not blocked.")


class ClaimOut(BaseModel):
    """One thing the file declares about its origin."""

    source: Literal["c2pa", "xmp", "exif", "png-text", "comment"]
    kind: str = Field(description="manifest, remote_manifest, digital_source_type, generator, software, camera")
    value: str
    verified: bool = Field(description="Only a C2PA manifest signed by a certificate that chains to the "
                                       "operator's trust anchors, with the file intact.")
    declares: Literal["synthetic", "capture"] | None


class ProvenanceOut(BaseModel):
    """What the file declares about its origin (C2PA, IPTC digital source type, generator hints).
    A camera-origin claim is shown but never clears an upload by itself."""

    claims: list[ClaimOut]
    declared_synthetic: bool
    declared_capture: bool


class AnalysisOut(BaseModel):
    label: str = Field(description="likely_authentic, suspected_fake, no_face, unreadable, or declared_synthetic "
                                   "(the file declares itself AI-generated or composited)")
    score: float | None = Field(description="Null unless this key may see raw scores.")
    reasons: list[str]
    model: ModelRef
    provider: str
    reused: bool
    faces: int
    timings_ms: dict[str, float]
    evidence: EvidenceSummary | None = Field(default=None, description="Only for keys that may see scores.")
    matches: list[MatchOut] = Field(default_factory=list, description="Known-fakes bank entries matched.")
    provenance: ProvenanceOut | None = Field(default=None, description="What the file declares about its origin.")


class ReviewOut(BaseModel):
    reason: str
    state: str


class UploadOut(BaseModel):
    """The upload as GET /uploads/{id} returns it; also the body of every webhook."""

    id: str
    status: str = Field(description="queued, analyzing, cleared, in_review, blocked, confirmed_fake, "
                                    "authentic, inconclusive, or withdrawn")
    terminal: bool = Field(description="False while queued or analyzing.")
    decision: Decision | None = Field(description="allow / review / block once analysed; null before, "
                                                  "and for a withdrawn upload.")
    label: str | None
    reasons: list[str]
    model_version: str | None
    score: float | None = Field(description="Null unless this key may see raw scores.")
    external_id: str | None
    metadata: dict[str, Any] | None
    kind: str
    mime: str
    bytes: int
    sha256: str
    created_at: UtcDateTime
    updated_at: UtcDateTime
    analysis: AnalysisOut | None
    review: ReviewOut | None
    links: Links


class UploadAccepted(BaseModel):
    id: str
    status: str
    links: Links


class UploadList(BaseModel):
    items: list[UploadOut]


class BatchItem(BaseModel):
    index: int
    id: str | None = None
    status: str | None = None
    links: Links | None = None
    error: Error | None = None


class BatchAccepted(BaseModel):
    items: list[BatchItem]


class DeliveryAttemptOut(BaseModel):
    url: str
    status_code: int | None
    latency_ms: float
    error: str | None
    created_at: UtcDateTime


class DeliveryOut(BaseModel):
    id: str
    event: Event
    upload_id: str
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: UtcDateTime | None
    last_status_code: int | None
    last_error: str | None
    created_at: UtcDateTime
    delivered_at: UtcDateTime | None
    attempt_log: list[DeliveryAttemptOut] | None = None


class DeliveryList(BaseModel):
    items: list[DeliveryOut]


class ClientOut(BaseModel):
    """The calling key's own settings (GET /me)."""

    id: str
    name: str
    key_prefix: str
    webhook_url: str | None
    show_score: bool
    rate_limit: str
    review_threshold: float | None
    block_threshold: float | None


class JsonRefused(ValueError):
    """A JSON text too large or too deeply nested to parse safely: the request is refused (400)."""


def json_depth(value: Any) -> int:
    """How deeply a parsed JSON value nests (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict | list):
            d += 1
            deepest = max(deepest, d)
            stack.extend((c, d) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


def parse_bounded_json(raw: str, what: str, *, max_depth: int = defaults.API_JSON_MAX_DEPTH,
                       max_bytes: int = defaults.API_JSON_MAX_TEXT_BYTES) -> Any:
    """json.loads with the size checked first and the depth after; JsonRefused past either,
    ValueError for text that is not JSON."""
    if len(raw) > max_bytes:
        raise JsonRefused(f"{what} is longer than {max_bytes} bytes")
    try:
        value = json.loads(raw)
    except RecursionError:
        raise JsonRefused(f"{what} is nested deeper than {max_depth} levels") from None
    if json_depth(value) > max_depth:
        raise JsonRefused(f"{what} is nested deeper than {max_depth} levels")
    return value


class SubmitOptions(BaseModel):
    """Optional fields of a submit: form fields (multipart) or query parameters (raw body)."""

    model_config = ConfigDict(extra="forbid")

    external_id: str | None = Field(default=None, min_length=1, max_length=255)
    metadata: dict[str, Any] | None = None
    filename: str | None = Field(default=None, max_length=255)

    @field_validator("external_id", "filename")
    @classmethod
    def _no_control_characters(cls, v: str | None) -> str | None:
        # PostgreSQL text cannot hold NUL, and no id or file name needs a control character.
        if v is not None and any(ord(c) < 32 or ord(c) == 127 for c in v):
            raise ValueError("must not contain control characters")
        return v

    @field_validator("metadata", mode="before")
    @classmethod
    def _parse_metadata(cls, v: Any) -> Any:
        try:
            if isinstance(v, str):
                v = parse_bounded_json(v, "metadata")
            elif json_depth(v) > defaults.API_JSON_MAX_DEPTH:
                raise JsonRefused(f"metadata is nested deeper than {defaults.API_JSON_MAX_DEPTH} levels")
        except JsonRefused as e:
            raise PydanticCustomError("json_refused", str(e)) from None
        except ValueError:
            raise ValueError("metadata must be a JSON object") from None
        if v is not None and not isinstance(v, dict):
            raise ValueError("metadata must be a JSON object")
        if v is not None and "\\u0000" in json.dumps(v):
            raise ValueError("metadata must not contain NUL characters")  # PostgreSQL JSON cannot
        if v is not None and len(json.dumps(v, separators=(",", ":"))) > defaults.API_METADATA_MAX_BYTES:
            raise ValueError(f"metadata is larger than {defaults.API_METADATA_MAX_BYTES} bytes as JSON")
        return v


class PageTokenIn(BaseModel):
    """POST /page-tokens: optionally, the platform's own id for the user it hands the page to."""

    model_config = ConfigDict(extra="forbid")

    subject: str | None = Field(default=None, min_length=1, max_length=255,
                                description="The platform's id for its user; kept in the upload's metadata "
                                            "as `page_user`.")

    @field_validator("subject")
    @classmethod
    def _no_control_characters(cls, v: str | None) -> str | None:
        if v is not None and any(ord(c) < 32 or ord(c) == 127 for c in v):
            raise ValueError("must not contain control characters")
        return v


class PageTokenOut(BaseModel):
    token: str = Field(description="Lets one browser upload through the page for this key until it expires.")
    expires_at: UtcDateTime
    page_url: str = Field(description="The upload page with the token: embed or link it for your signed-in user.")


RESPONSE_MODELS = (UploadOut, UploadAccepted, UploadList, BatchAccepted, DeliveryOut, DeliveryList,
                   ClientOut, PageTokenOut, Error)
