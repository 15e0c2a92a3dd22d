"""/metrics: the counters of core/metrics.py (pooled across processes in gunicorn's multiprocess
mode when PROMETHEUS_MULTIPROC_DIR is set by the launcher) plus state (uploads by status, queue
depth, providers in use) read from the DB and Redis at scrape time, so every web process reports
the same truth."""

from __future__ import annotations

import os

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily


class StateCollector:
    """Scrape-time gauges from the DB and Redis."""

    def __init__(self, app):
        self.app = app

    def collect(self):
        from sqlalchemy import func, select

        from core.models import Upload
        from core.queue import analysis_queue, live_workers

        settings = self.app.config["VERITY"]
        by_status = GaugeMetricFamily("verity_uploads", "Uploads by status", labels=["status"])
        with self.app.extensions["verity.db"].session() as s:
            for status, n in s.execute(select(Upload.status, func.count()).group_by(Upload.status)):
                by_status.add_metric([status], n)
        yield by_status
        conn = self.app.extensions["verity.redis"]
        q = analysis_queue(settings, conn)
        depth = GaugeMetricFamily("verity_queue_jobs", "Jobs in the analysis queue by registry",
                                  labels=["state"])
        depth.add_metric(["queued"], q.count)
        depth.add_metric(["started"], q.started_job_registry.count)
        depth.add_metric(["scheduled"], q.scheduled_job_registry.count)
        depth.add_metric(["failed"], q.failed_job_registry.count)
        yield depth
        prov = GaugeMetricFamily("verity_workers", "Live detector workers by provider and model",
                                 labels=["provider", "model", "version"])
        counts: dict[tuple[str, str, str], int] = {}
        for info in live_workers(conn, settings):
            key = (info.get("provider", "unknown"), info.get("model", ""), info.get("version", ""))
            counts[key] = counts.get(key, 0) + 1
        for key, n in counts.items():
            prov.add_metric(list(key), n)
        yield prov


bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics():
    from app.health import ops_authorized

    if not ops_authorized():
        return Response("metrics need the operator token (VERITY_OPS_TOKEN) as a Bearer token\n",
                        status=401, mimetype="text/plain", headers={"WWW-Authenticate": "Bearer"})
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    state = CollectorRegistry()
    state.register(StateCollector(current_app._get_current_object()))
    try:
        extra = generate_latest(state)
    except Exception as e:  # noqa: BLE001 - a down Redis must not hide the process metrics
        extra = f"# state collector failed: {type(e).__name__}\n".encode()
    return Response(generate_latest(registry) + extra, mimetype=CONTENT_TYPE_LATEST)


def init_app(app) -> None:
    app.register_blueprint(bp)
