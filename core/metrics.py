"""Prometheus counters and histograms, recorded where things happen (the door, the lifecycle, the
workers). The web app serves them at /metrics (app/metrics.py), pooled across processes in
prometheus-client's multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set by the launcher."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

UPLOADS = Counter("verity_uploads_accepted_total", "Uploads accepted at the door", ["source", "kind"])
REJECTED = Counter("verity_uploads_rejected_total", "Uploads refused at the door", ["reason"])
ENQUEUE_FAILURES = Counter("verity_enqueue_failures_total", "Committed uploads whose enqueue failed")
JOB_SECONDS = Histogram("verity_job_duration_seconds", "Analysis job wall time", ["outcome"],
                        buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
STAGE_SECONDS = Histogram("verity_stage_duration_seconds", "Detector stage time", ["stage"],
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
VERDICTS = Counter("verity_verdicts_total", "Analyses stored, by label and routed status", ["label", "status"])
REUSED = Counter("verity_analyses_reused_total", "Analyses copied from identical bytes")
JOB_FAILURES = Counter("verity_job_failures_total", "Analysis job attempts that raised", ["final"])
RECONCILED = Counter("verity_reconciled_total", "Uploads re-enqueued by the reconciler")
