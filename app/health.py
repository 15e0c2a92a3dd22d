"""Liveness and readiness, kept apart (as HMA's /status vs /status/live): an orchestrator must
restart a process that does not answer /healthz, but only stop sending traffic to one whose
dependencies (DB, Redis, a live detector worker) are missing, as /readyz reports."""

from __future__ import annotations

import hmac

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import text

bp = Blueprint("health", __name__)


def ops_authorized() -> bool:
    """True when no VERITY_OPS_TOKEN is set, or the request carries it as a Bearer token."""
    token = current_app.config["VERITY"].ops_token
    if token is None:
        return True
    sent = request.headers.get("Authorization", "")
    return sent.startswith("Bearer ") and hmac.compare_digest(sent[7:].encode(), token.encode())


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    from core.queue import live_workers

    settings = current_app.config["VERITY"]
    checks: dict[str, dict] = {}
    try:
        with current_app.extensions["verity.db"].session() as s:
            s.execute(text("SELECT 1"))
        checks["database"] = {"ok": True}
    except Exception as e:  # noqa: BLE001 - readiness reports any failure
        checks["database"] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:300]}
    conn = current_app.extensions["verity.redis"]
    try:
        conn.ping()
        checks["redis"] = {"ok": True}
    except Exception as e:  # noqa: BLE001 - readiness reports any failure
        checks["redis"] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:300]}
    if checks["redis"]["ok"]:
        try:
            workers = live_workers(conn, settings)
            checks["workers"] = {
                "ok": len(workers) > 0,
                "count": len(workers),
                "providers": sorted({w.get("provider", "unknown") for w in workers}),
                "models": sorted({f"{w.get('model')} {w.get('version')}" for w in workers}),
                "data_licences": sorted({w.get("data_licence") or "unknown (a worker from before the field)"
                                         for w in workers}),
            }
            if not workers:
                checks["workers"]["error"] = "no live detector worker on queue " + settings.queue_name
        except Exception as e:  # noqa: BLE001 - readiness reports any failure
            checks["workers"] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:300]}
    else:
        checks["workers"] = {"ok": False, "error": "unknown: Redis is not reachable"}
    ready = all(c["ok"] for c in checks.values())
    missing = [name for name, c in checks.items() if not c["ok"]]
    status = 200 if ready else 503
    if not ops_authorized():  # errors, worker providers and models are for the operator only
        return jsonify({"ready": ready}), status
    return jsonify({"ready": ready, "missing": missing, "checks": checks}), status


def init_app(app) -> None:
    app.register_blueprint(bp)
