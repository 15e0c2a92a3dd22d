"""Routing settings an admin changes at run time, stored in `runtime_settings` and read by the
web app and by the worker's routing (workers/jobs.py: `routing_policy`, one query per analysis).
Environment settings (core/settings.py) are the fallback; the model manifest's recommendation is
the last fallback for thresholds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import defaults
from core.lifecycle import audit
from core.models import ApiClient, RuntimeSetting
from core.policy import Thresholds
from core.settings import STATUSES_ROUTABLE, Settings, SettingsError, parse_boolean, parse_choice, parse_float

KEYS = ("review_threshold", "block_threshold", "route_no_face", "route_unreadable",
        "blocked_needs_review", "review_sla_hours")


def load_overrides(session: Session) -> dict[str, Any]:
    return {r.key: r.value for r in session.scalars(select(RuntimeSetting).where(RuntimeSetting.key.in_(KEYS)))
            if r.value is not None}


def _with_overrides(settings: Settings, o: dict[str, Any]) -> Settings:
    changes = {k: o[k] for k in ("review_threshold", "block_threshold", "route_no_face",
                                 "route_unreadable", "blocked_needs_review") if k in o}
    return settings.with_(**changes) if changes else settings


def _due_seconds(o: dict[str, Any]) -> int:
    hours = o.get("review_sla_hours")
    return int(float(hours) * 3600) if hours else defaults.REVIEW_DUE_SECONDS


def effective_settings(session: Session, settings: Settings) -> Settings:
    """`settings` with the admin's routing overrides applied (thresholds, no_face/unreadable)."""
    return _with_overrides(settings, load_overrides(session))


def review_due_seconds(session: Session) -> int:
    """The SLA: how long after it opens a review item is due."""
    return _due_seconds(load_overrides(session))


@dataclass(frozen=True)
class RoutingPolicy:
    """Everything core.policy.route needs for one upload, read once."""

    thresholds: Thresholds
    no_face: str
    unreadable: str
    blocked_needs_review: bool
    review_due_seconds: int


def routing_policy(session: Session, settings: Settings, model_thresholds: Thresholds,
                   client_id: str | None = None) -> RoutingPolicy:
    """The policy for one upload: the admin's overrides over the environment over the model's
    recommendation, then the client key's own thresholds (one query for the overrides, one for
    the key when the upload came through the API)."""
    o = load_overrides(session)
    s = _with_overrides(settings, o)
    review = s.review_threshold if s.review_threshold is not None else model_thresholds.review
    block = s.block_threshold if s.block_threshold is not None else model_thresholds.block
    if client_id:
        review, block = client_thresholds(session, client_id, review, block)
    return RoutingPolicy(Thresholds(review=review, block=block), s.route_no_face, s.route_unreadable,
                         s.blocked_needs_review, _due_seconds(o))


def client_thresholds(session: Session, client_id: str, review: float, block: float) -> tuple[float, float]:
    """The client's own thresholds where it has them, else the operator's (review <= block kept)."""
    row = session.execute(select(ApiClient.review_threshold, ApiClient.block_threshold)
                          .where(ApiClient.id == client_id)).first()
    if row is None:
        return review, block
    r = row.review_threshold if row.review_threshold is not None else review
    b = row.block_threshold if row.block_threshold is not None else block
    return (r, max(r, b))


@dataclass(frozen=True)
class EffectiveRouting:
    review_threshold: float
    block_threshold: float
    thresholds_from: str
    route_no_face: str
    route_unreadable: str
    blocked_needs_review: bool
    review_sla_hours: float


def manifest_thresholds(settings: Settings) -> tuple[float, float, str]:
    try:
        from detector.manifest import load_manifest

        m = load_manifest(settings.model, verify=False, models_dir=settings.models_dir)
        return m.thresholds.review, m.thresholds.block, f"model {m.name} {m.version}"
    except Exception:  # noqa: BLE001  (no model on a web-only host: the named defaults stand)
        return defaults.DEFAULT_REVIEW_THRESHOLD, defaults.DEFAULT_BLOCK_THRESHOLD, "defaults"


def effective_routing(session: Session, settings: Settings) -> EffectiveRouting:
    s = effective_settings(session, settings)
    mr, mb, src = manifest_thresholds(settings)
    o = load_overrides(session)
    where = "admin setting" if ("review_threshold" in o or "block_threshold" in o) else (
        "environment" if settings.review_threshold is not None or settings.block_threshold is not None else src)
    return EffectiveRouting(
        review_threshold=s.review_threshold if s.review_threshold is not None else mr,
        block_threshold=s.block_threshold if s.block_threshold is not None else mb,
        thresholds_from=where, route_no_face=s.route_no_face, route_unreadable=s.route_unreadable,
        blocked_needs_review=s.blocked_needs_review,
        review_sla_hours=review_due_seconds(session) / 3600)


def parse_form(form: dict[str, str]) -> dict[str, Any]:
    """Validate the settings form; blank threshold fields mean "no override". Raises SettingsError."""
    out: dict[str, Any] = {}
    for k in ("review_threshold", "block_threshold"):
        v = (form.get(k) or "").strip()
        out[k] = parse_float(k, v, 0.0, 1.0) if v else None
    if out["review_threshold"] is not None and out["block_threshold"] is not None \
            and out["block_threshold"] < out["review_threshold"]:
        raise SettingsError("the block threshold must be >= the review threshold")
    out["route_no_face"] = parse_choice("route_no_face", form.get("route_no_face", ""), STATUSES_ROUTABLE)
    out["route_unreadable"] = parse_choice("route_unreadable", form.get("route_unreadable", ""),
                                           STATUSES_ROUTABLE)
    out["blocked_needs_review"] = parse_boolean("blocked_needs_review", form.get("blocked_needs_review", "off"))
    sla = parse_float("review_sla_hours", form.get("review_sla_hours", "") or "0", 0.0, 24 * 365)
    if sla <= 0:
        raise SettingsError("review_sla_hours must be > 0")
    out["review_sla_hours"] = sla
    return out


def save_overrides(session: Session, values: dict[str, Any], actor: str) -> dict[str, tuple[Any, Any]]:
    """Store the values (None deletes an override); one audit event lists what changed."""
    before = load_overrides(session)
    changed = {k: (before.get(k), v) for k, v in values.items() if before.get(k) != v}
    for k, (_, v) in changed.items():
        row = session.get(RuntimeSetting, k)
        if row is None:
            row = RuntimeSetting(key=k)
            session.add(row)
        row.value = v
        row.updated_by = actor
    if changed:
        audit(session, "settings.changed", actor,
              detail={k: {"before": a, "after": b} for k, (a, b) in changed.items()})
    session.commit()
    return changed
