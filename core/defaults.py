"""Every limit and default of the service, named and explained once (cf. rq/defaults.py).

Settings (core/settings.py) read the environment and fall back to these values. The detector's
own limits (pixels, video seconds, streams, decoded frames, face detection, aggregation) are in
detector/limits.py: the web process validates uploads with the same detector code and limits
as the workers, so both agree on what is acceptable.
"""

from __future__ import annotations

# --- uploads --------------------------------------------------------------------------------
MAX_UPLOAD_BYTES = 200 * 1024 * 1024
"""Largest upload accepted (bytes); larger requests get 413 before the body is stored."""

# --- jobs and queues ------------------------------------------------------------------------
JOB_TIMEOUT_SECONDS = 10 * 60
"""RQ job timeout for one analysis (the worst case is a long 4K video on a CPU)."""

JOB_RETRY_INTERVALS = (10, 60, 300)
"""Seconds between the retries of a failed analysis job; len() is the retry count."""

RESULT_TTL_SECONDS = 24 * 3600
"""How long RQ keeps a finished job's return value (the DB keeps the analysis for good)."""

FAILURE_TTL_SECONDS = 7 * 24 * 3600
"""How long RQ keeps a failed job (rq's own default, a year, only fills Redis)."""

WORKER_MAINTENANCE_INTERVAL = 60
"""Seconds between RQ maintenance runs, which requeue jobs of dead workers (rq default: 600)."""

RECONCILE_INTERVAL_SECONDS = 60
"""How often the reconciler looks for uploads stuck in queued/analyzing."""

STUCK_AFTER_SECONDS = 15 * 60
"""An upload queued or analyzing for longer than this, with no live job, is enqueued again."""

# --- routing --------------------------------------------------------------------------------
DEFAULT_REVIEW_THRESHOLD = 0.5
"""Fallback review threshold when the model manifest recommends none."""

DEFAULT_BLOCK_THRESHOLD = 0.9
"""Fallback block threshold when the model manifest recommends none."""

# --- service (web, queue, launcher) ---------------------------------------------------------
DATA_DIR = "./var"
"""Where the embedded defaults live: SQLite file, blob folder, embedded Redis AOF, secrets."""

LOG_LEVEL = "INFO"
"""Log level of every Verity process (VERITY_LOG_LEVEL)."""

QUEUE_NAME = "verity-analyze"
"""The RQ queue analysis jobs go on."""

UPLOAD_FORM_OVERHEAD_BYTES = 64 * 1024
"""Room for multipart headers on top of MAX_UPLOAD_BYTES in Flask's MAX_CONTENT_LENGTH."""

BLOCKED_NEEDS_REVIEW = True
"""A blocked upload also gets a review item so that a human confirms the block."""

KNOWN_FAKE_NEEDS_REVIEW = False
"""An upload that matches the known-fakes bank is blocked without a new review item: a human
confirmed it already (the evidence view still shows the match)."""

ROUTE_DECLARED_SYNTHETIC = "in_review"
"""Status for a file that declares itself AI-generated or composited (C2PA, IPTC, generator
hints): a human looks. Whatever a file declares, it never clears an item by itself."""

ROUTE_NO_FACE = "cleared"
"""Status for a `no_face` result: nothing for a face-forgery detector to judge. The label stays
`no_face`, never "authentic" (README.md, "The detector"); operators who want a human look set `in_review`."""

ROUTE_UNREADABLE = "in_review"
"""Status for an `unreadable` result that passed the door: fail closed, a human looks."""

REVIEW_DUE_SECONDS = 24 * 3600
"""A review item is due this long after it is created (the review UI orders by it)."""

WORKER_HEARTBEAT_TTL_SECONDS = 120
"""How long a worker's provider record lives in Redis without a refresh (readiness checks it)."""

AUTO_WORKERS_MAX = 4
"""`verity up --workers auto` on CPUs: one single-threaded detector worker per CPU, at most this
many (each holds its own models, about 300 MB). With CUDA: one worker (one per GPU)."""

WEB_WORKERS = 2
"""Gunicorn worker processes started by `verity web` / `verity up`."""

WEB_THREADS = 4
"""Threads per gunicorn worker (gthread): uploads wait on disk and Redis, not on the CPU."""

SHUTDOWN_GRACE_SECONDS = 8
"""How long `verity up` waits for its children after Ctrl-C or SIGTERM before it kills them and
everything under them: everything stops within 10 s, whatever state it is in (a job cut short is
handed back by the lease and the reconciler; an upload cut short was never acknowledged)."""

POOL_GRACE_SECONDS = 6
"""The same for the workers of `verity worker -n N`: shorter, so a pool under `verity up` is
down before the launcher's own deadline."""

WEB_GRACE_SECONDS = 5
"""gunicorn's graceful timeout: in-flight requests get this long to finish on shutdown."""

READY_TIMEOUT_SECONDS = 180
"""How long `verity up` waits for /readyz (web up, a detector worker with its model loaded)."""

# --- platform API (issue 5) -----------------------------------------------------------------
API_KEY_PREFIX = "vk_"
"""API keys start with this, so that secret scanners and people can tell them apart."""

API_KEY_BYTES = 32
"""Random bytes in an API key (256 bits; stored as sha256, which is enough for such entropy)."""

API_RATE_LIMIT = "600/minute"
"""Default per-key request limit (Flask-Limiter syntax) for keys without their own."""

API_MAX_QUEUE_DEPTH = 5000
"""Back-pressure: past this many queued analysis jobs, new submits get 503 with Retry-After."""

API_BACKPRESSURE_RETRY_AFTER = 30
"""Seconds a client is told to wait (Retry-After) when the analysis queue is full."""

API_MAX_WAIT_SECONDS = 30
"""Upper bound on `?wait=` long polls; the server answers with the current state at the end."""

API_BATCH_MAX_FILES = 20
"""Most files accepted by one POST /uploads:batch."""

API_METADATA_MAX_BYTES = 4096
"""Largest `metadata` JSON object (serialised) stored with an upload."""

API_JSON_MAX_DEPTH = 20
"""Deepest nesting accepted in `metadata` and a batch's `items` (400 past it): no platform needs
more, and a deeply nested document is a cheap way to exhaust a parser's recursion."""

API_JSON_MAX_TEXT_BYTES = 64 * 1024
"""Longest JSON text accepted for `metadata` or a batch's `items` before it is parsed (400)."""

WEBHOOK_QUEUE = "webhooks"
"""The RQ queue webhook deliveries go on; never the analysis queue, so a dead endpoint cannot
slow analysis down."""

WEBHOOK_TIMEOUT_SECONDS = 10.0
"""Connect and read timeout of one webhook attempt."""

WEBHOOK_RETRY_INTERVALS = (30, 120, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600)
"""Seconds between webhook attempts: exponential-ish back-off over about a day."""

WEBHOOK_MAX_REDIRECTS = 3
"""Redirects a webhook attempt follows, each target checked by the outbound guard."""

WEBHOOK_SIGNATURE_TOLERANCE_SECONDS = 300
"""Receivers should refuse a signature whose timestamp is further off than this (replays)."""

WEBHOOK_STUCK_AFTER_SECONDS = 120
"""An outbox row due for longer than this, with no live job, is enqueued again."""

# --- the upload page -------------------------------------------------------------------------
PAGE_ACCESS = "open"
"""Who may upload through the page `/`: `open` (anyone; uploads without an account or a platform
token are anonymous), `users` (signed-in moderators and admins, or a platform token), `token`
(only holders of a platform's page token)."""

PAGE_RATE_LIMIT = "10/minute;100/day"
"""Page uploads per client address (Flask-Limiter syntax), whoever uploads."""

PAGE_MAX_BYTES_PER_DAY = 1024 * 1024 * 1024
"""Bytes of page uploads per client address and day (the request's Content-Length counts)."""

PAGE_TOKEN_SECONDS = 15 * 60
"""How long a page token a platform minted (POST /api/v1/page-tokens) lets its user upload."""

ANONYMOUS_PRIORITY_PENALTY = 100
"""Subtracted from an anonymous upload's review priority (and it gets no due date): a flood of
anonymous page uploads never buries the platforms' items in the queue."""

# --- review queue (issue 4) -----------------------------------------------------------------
REVIEW_CLAIM_SECONDS = 10 * 60
"""A claim on a review item lasts this long; the open evidence page renews it (heartbeat)."""

REVIEW_HEARTBEAT_SECONDS = 60
"""How often the evidence page renews its claim (well inside REVIEW_CLAIM_SECONDS)."""

REVIEW_PAGE_SIZE = 50
"""Rows per page in the review queue, the audit log and a key's webhook delivery log."""

REVIEW_TOP_FACES = 6
"""Top-scoring face crops shown on the evidence page."""

REVIEW_CROP_SIDE = 160
"""Longest side (pixels) of a face crop thumbnail; crops are cached in the data dir."""

LOGIN_RATE_LIMIT = "10/minute;50/hour"
"""Login attempts per client address (Flask-Limiter syntax); failures and successes count."""

SESSION_HOURS = 12
"""A moderator's session lasts one shift, then they sign in again."""

SPOOL_MAX_AGE_SECONDS = 3600
"""Temp files (upload spools, S3 downloads) older than this in `<data>/tmp` are left-overs of a
killed process and are removed when a web or worker process starts. Longer than any request
or job can live (gunicorn timeout, JOB_TIMEOUT_SECONDS)."""

# --- live sessions (core/live.py, /api/v1/live) ----------------------------------------------
LIVE_QUEUE_NAME = "verity-live"
"""The RQ queue of live segments; detector workers take it before the analysis queue."""

LIVE_SEGMENT_MAX_BYTES = 8 * 1024 * 1024
"""Largest segment (a chunk, or all of its JPEG frames together)."""

LIVE_SEGMENT_MIN_SECONDS = 0.5
LIVE_SEGMENT_MAX_SECONDS = 10.0
"""A video chunk's duration must lie in this range (the issue's 1-10 s, with slack below)."""

LIVE_SEGMENT_MAX_FRAMES = 30
"""JPEG frames in one segment, at most."""

LIVE_SEGMENT_FRAMES = 12
"""Frames sampled from a chunk (the occlusion check samples short chunks more densely:
detector/limits.OCCLUSION_FPS)."""

LIVE_CLASSIFY_FRAMES = 6
"""Of those, the frames whose faces the classifier scores (spread evenly): the answer must come
within about a second and a half on two cores (bench/live.py)."""

LIVE_MAX_SEGMENTS = 2000
"""Segments per session (an hour of 2 s segments, with room)."""

LIVE_SESSION_SECONDS = 4 * 3600
"""A session ends by itself this long after it opened."""

LIVE_IDLE_SECONDS = 600
"""A session that received no segment for this long ends by itself."""

LIVE_MAX_QUEUED_SEGMENTS = 3
"""Segments of one session waiting for a worker, at most: past it a new one is refused (429,
`segments_behind`), so that answers never fall behind a call without bound (bench/live.py: one
worker keeps 1-2 sessions of 2 s segments)."""

LIVE_MAX_OPEN_SESSIONS = 50
"""Open sessions per API key."""

LIVE_ANSWER_WAIT_SECONDS = 5.0
"""How long POST .../segments waits for the segment's analysis before answering 202."""

LIVE_ROLLING_TOP_K = 2
"""The rolling score is the mean of the session's k highest segment scores (one odd segment
never decides alone), or a segment's own score when its occlusion check caught a pasted face."""

LIVE_JOB_TIMEOUT_SECONDS = 60
"""A segment's analysis job is killed after this (a segment is capped at 10 s of media)."""

LIVE_RESULT_TTL_SECONDS = 600
"""How long Redis keeps the wake-up signal of an analysed segment."""
