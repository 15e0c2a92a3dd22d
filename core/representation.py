"""The public view of an upload (pure: no Flask), shared by GET /uploads/{id} and the webhooks."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import joinedload

from core.models import Status, Upload
from core.schemas import (
    AnalysisOut,
    ClaimOut,
    EvidenceSummary,
    FrameSummary,
    Links,
    MatchOut,
    ModelRef,
    OcclusionEventOut,
    OcclusionOut,
    ProvenanceOut,
    ReviewOut,
    UploadOut,
)

VIEW_OPTIONS = (joinedload(Upload.analyses), joinedload(Upload.review_item))
"""Load what `upload_body` reads with the upload itself: one query instead of three."""

API_PREFIX = "/api/v1"
WITHDRAWN = "withdrawn"
"""Status of an upload the platform withdrew (DELETE): blob removed, record kept."""

DECISIONS = {
    Status.CLEARED: "allow",
    Status.AUTHENTIC: "allow",
    Status.IN_REVIEW: "review",
    Status.INCONCLUSIVE: "review",
    Status.BLOCKED: "block",
    Status.CONFIRMED_FAKE: "block",
}
"""What the platform should do with the content, by status (pending and withdrawn: nothing yet)."""


def upload_links(upload_id: str) -> Links:
    return Links(self=f"{API_PREFIX}/uploads/{upload_id}")


def _evidence(evidence: dict[str, Any]) -> EvidenceSummary:
    frames = evidence.get("frames") or []
    summaries = []
    for f in frames:
        scores = [face.get("fake_score") for face in f.get("faces", []) if face.get("fake_score") is not None]
        summaries.append(FrameSummary(index=int(f.get("index", 0)), timestamp=float(f.get("timestamp", 0.0)),
                                      faces=len(f.get("faces", [])), score=max(scores) if scores else None))
    top = sorted((s for s in summaries if s.score is not None), key=lambda s: -s.score)[:5]
    return EvidenceSummary(frames_analyzed=len(frames), frames_with_faces=sum(1 for s in summaries if s.faces),
                           faces=sum(s.faces for s in summaries), top_frames=top)


def _provenance(p: dict[str, Any] | None) -> ProvenanceOut | None:
    if not p:
        return None
    return ProvenanceOut(claims=[ClaimOut(source=c["source"], kind=c["kind"], value=c["value"], verified=c["verified"],
                                          declares=c.get("declares")) for c in p.get("claims", [])],
                         declared_synthetic=bool(p.get("declared_synthetic")),
                         declared_capture=bool(p.get("declared_capture")))


def occlusion_out(occ: dict[str, Any] | None, *, show_score: bool) -> OcclusionOut | None:
    if not occ:
        return None
    return OcclusionOut(checked=bool(occ.get("checked")), score=occ.get("score") if show_score else None,
                        events=[OcclusionEventOut(start=e["start"], end=e["end"], peak=e["peak"], covered=e["covered"],
                                                  score=e.get("score") if show_score else None, at=e.get("at"))
                                for e in occ.get("events", [])])


def upload_out(upload: Upload, *, show_score: bool) -> UploadOut:
    a = upload.latest_analysis
    analysis = None
    if a is not None:
        analysis = AnalysisOut(
            label=a.label,
            score=a.score if show_score else None,
            reasons=[str(r) for r in (a.reasons or [])],
            model=ModelRef(name=a.model_name, version=a.model_version),
            provider=a.provider,
            reused=a.reused_from is not None,
            faces=sum(len(f.get("faces", [])) for f in (a.evidence or {}).get("frames", []) or []),
            timings_ms={k: float(v) for k, v in (a.timings or {}).items() if isinstance(v, int | float)},
            evidence=_evidence(a.evidence or {}) if show_score else None,
            matches=[MatchOut(**m) for m in (a.evidence or {}).get("matches") or []],
            provenance=_provenance((a.evidence or {}).get("provenance")),
            occlusion=occlusion_out((a.evidence or {}).get("occlusion"), show_score=show_score),
        )
    item = upload.review_item
    return UploadOut(
        id=upload.id,
        status=upload.status,
        terminal=upload.status not in Status.PENDING,
        decision=DECISIONS.get(upload.status),
        label=analysis.label if analysis else None,
        reasons=analysis.reasons if analysis else [],
        model_version=f"{a.model_name} {a.model_version}" if a is not None else None,
        score=analysis.score if analysis else None,
        external_id=upload.external_id,
        metadata=upload.metadata_json,
        kind=upload.kind,
        mime=upload.mime,
        bytes=upload.bytes,
        sha256=upload.sha256,
        created_at=upload.created_at,
        updated_at=upload.updated_at,
        analysis=analysis,
        review=ReviewOut(reason=item.reason, state=item.state) if item is not None else None,
        links=upload_links(upload.id),
    )


def upload_body(upload: Upload, *, show_score: bool) -> dict[str, Any]:
    return upload_out(upload, show_score=show_score).model_dump(mode="json")
