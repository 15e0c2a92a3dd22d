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


def as_utc(value: datetime) -> datetime:
    """Stored times are UTC; SQLite hands them back without a zone."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDateTime = Annotated[datetime, AfterValidator(as_utc)]
"""A time in the API: RFC 3339 in UTC, with its `Z` (`2026-12-06T00:06:07.886439Z`)."""

Decision = Literal["allow", "review", "block"]
Event = Literal["upload.analyzed", "upload.decided", "upload.failed", "live.suspected", "live.ended"]


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


class OcclusionEventOut(BaseModel):
    """A moment when something passed in front of the face (detector/occlusion.py)."""

    start: float = Field(description="Seconds from the start of the media (of the segment, for live).")
    end: float
    peak: float = Field(description="When the face was most covered.")
    covered: float = Field(description="Share of the face box covered at the peak, 0-1.")
    score: float | None = Field(default=None, description="0: the face behaved like a real one behind the "
                                                          "occluder; 1: like a pasted face (the occluder cut off at "
                                                          "the face's outline). Null unless this key may see scores.")
    at: float | None = Field(default=None, description="Live only: the peak in call time (segment start + peak).")
    segment: int | None = Field(default=None, description="Live only: the segment it was seen in.")


class OcclusionOut(BaseModel):
    """The hand-over-the-face check of a video or a live segment."""

    checked: bool = Field(description="False when the face was not tracked through enough frames.")
    events: list[OcclusionEventOut]
    score: float | None = Field(default=None, description="The worst event's score; null when nothing passed in "
                                                          "front of the face, or unless this key may see scores.")


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
    occlusion: OcclusionOut | None = Field(default=None, description="Videos: the hand-over-the-face check.")


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




# --- live sessions ------------------------------------------------------------------------------

class LiveOpenIn(BaseModel):
    """POST /api/v1/live (a JSON body, all optional)."""

    model_config = ConfigDict(extra="forbid")

    external_id: str | None = Field(default=None, min_length=1, max_length=255,
                                    description="The platform's own id for the call participant.")
    webhook: bool = Field(default=True, description="Send live.suspected and live.ended to this key's webhook URL.")

    @field_validator("external_id")
    @classmethod
    def _no_control_characters(cls, v: str | None) -> str | None:
        if v is not None and any(ord(c) < 32 or ord(c) == 127 for c in v):
            raise ValueError("must not contain control characters")
        return v


class LiveSegmentOut(BaseModel):
    seq: int = Field(description="0 for the first segment of the session.")
    start: float = Field(description="Seconds from the start of the call, as sent.")
    duration: float | None
    kind: Literal["video", "frames"]
    state: Literal["queued", "analyzed", "failed"]
    label: str | None = Field(description="likely_authentic, suspected_fake, no_face, unreadable.")
    faces: int | None
    reasons: list[str]
    error: str | None
    score: float | None = Field(default=None, description="With the occlusion check. Null unless this key may "
                                                          "see raw scores.")
    classifier_score: float | None = Field(default=None, description="The face classifier alone.")
    occlusion: OcclusionOut | None


class LiveSegments(BaseModel):
    received: int
    analyzed: int
    queued: int
    failed: int


class LiveReview(BaseModel):
    upload_id: str = Field(description="The review-queue record (GET /api/v1/uploads/{id}); its verdict "
                                       "comes as upload.decided.")
    status: str | None
    verdict: str | None = Field(description="confirmed_fake, authentic or inconclusive once a moderator decided.")


class LiveLinks(BaseModel):
    self: str
    segments: str


class LiveSessionOut(BaseModel):
    """A live session: the rolling verdict, the timeline of segments and the evidence."""

    id: str
    external_id: str | None
    state: Literal["open", "ended"]
    verdict: Literal["pending", "no_sign", "no_face", "suspected"] = Field(
        description="The rolling verdict: pending until a segment is analysed; suspected once the rolling score "
                    "crossed the review threshold (the session is then in the review queue, and stays suspected).")
    score: float | None = Field(default=None, description="The rolling score: the mean of the two highest "
                                                          "segment scores, or a segment's own score when its "
                                                          "occlusion check caught a pasted face. Null unless this "
                                                          "key may see raw scores.")
    segments: LiveSegments
    opened_at: UtcDateTime
    expires_at: UtcDateTime
    ended_at: UtcDateTime | None
    ended_by: Literal["client", "expiry"] | None
    suspected_at: UtcDateTime | None
    review: LiveReview | None
    occlusion_events: list[OcclusionEventOut] = Field(description="Every hand-over-the-face moment of the call.")
    timeline: list[LiveSegmentOut]
    links: LiveLinks


class LiveSegmentAnswer(BaseModel):
    """POST /api/v1/live/{id}/segments: the segment's answer, and the session after it."""

    segment: LiveSegmentOut
    session: LiveSessionOut = Field(description="The session after this segment; its timeline holds the last "
                                                "10 segments only (GET the session for all of them).")
    answered: bool = Field(description="False (HTTP 202) when the analysis did not finish within `wait`: "
                                       "GET the session for it.")


RESPONSE_MODELS = (UploadOut, UploadAccepted, UploadList, BatchAccepted, DeliveryOut, DeliveryList,
                   ClientOut, PageTokenOut, Error, LiveOpenIn, LiveSessionOut, LiveSegmentAnswer)
