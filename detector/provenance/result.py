"""What a file declares about its origin: a JSON-serialisable record of claims."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Source = Literal["c2pa", "xmp", "exif", "png-text", "comment"]
Kind = Literal["manifest", "remote_manifest", "digital_source_type", "generator", "software", "camera"]


@dataclass(slots=True)
class Claim:
    source: Source
    """Where it was read: "c2pa" (a manifest), "xmp", "exif", "png-text", "comment" (JPEG COM)."""
    kind: Kind
    """"manifest" (one C2PA manifest, everything about it in `detail`), "remote_manifest" (a
    C2PA manifest referenced by URL and not fetched), "digital_source_type" (an IPTC term),
    "generator" (a known generator named, or a generation tool's metadata), "software" (the
    program that wrote the file, not a known generator: "Adobe Photoshop 25.0"), "camera"
    (EXIF Make/Model)."""
    value: str
    """The declaration: an IPTC URL, a generator's name, "Make Model", a claim generator."""
    verified: bool = False
    """True only for C2PA claims whose manifest's signature is valid, whose hashes match the
    file and whose signing certificate chains to one of the given trust anchors. XMP, EXIF and
    PNG text are never verified: anyone can write them."""
    declares: Literal["synthetic", "capture"] | None = None
    """What the claim says about the origin, if anything."""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Provenance:
    """Everything the file says about where it came from, verified or not.

    For the caller: route `declared_synthetic` to review and show every claim to moderators. A
    camera-origin claim (`declared_capture`), even a verified one, must never clear an item by
    itself: a real camera can photograph a screen, a valid manifest can sit on an edited
    file's ancestor, and unverified claims are one text editor away."""

    claims: list[Claim] = field(default_factory=list)
    declared_synthetic: bool = False
    """Some claim, verified or not, says the file is (partly) machine-made: an IPTC synthetic
    digital source type (XMP or a C2PA action) or a known generator's name or metadata."""
    declared_capture: bool = False
    """Some claim, verified or not, says a camera took it: a capture digital source type
    (digitalCapture, computationalCapture, compositeCapture) in XMP or in a C2PA action, e.g.
    a `c2pa.created` action of a verified camera manifest. EXIF Make/Model alone does not count
    (editors and generators copy it). Never enough to clear an item."""
    checked: list[str] = field(default_factory=list)
    """The sources that were looked for ("c2pa", "xmp", "exif", "png-text", "comment"): an absent
    claim means something only for a source listed here."""
    errors: list[str] = field(default_factory=list)
    """What could not be read, and why. Reading never raises for a bad file; it lands here."""
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def verified_claims(self) -> list[Claim]:
        return [c for c in self.claims if c.verified]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Provenance:
        return cls(
            claims=[Claim(**c) for c in d.get("claims", [])],
            declared_synthetic=bool(d.get("declared_synthetic")),
            declared_capture=bool(d.get("declared_capture")),
            checked=list(d.get("checked", [])),
            errors=list(d.get("errors", [])),
            timings_ms=dict(d.get("timings_ms", {})),
        )
