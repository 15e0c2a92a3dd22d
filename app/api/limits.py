"""Per-key rate limits (Flask-Limiter on the same Redis as the queue) and queue back-pressure."""

from __future__ import annotations

import logging

from flask import current_app, request
from redis.exceptions import RedisError

from app.api.auth import current_client
from core import defaults
from core.errors import ApiError

log = logging.getLogger(__name__)


def rate_key() -> str:
    c = current_client()
    return f"client:{c.id}" if c is not None else f"ip:{request.remote_addr or '-'}"


def rate_limit_value() -> str:
    c = current_client()
    if c is not None and c.rate_limit:
        return c.rate_limit
    return current_app.config["VERITY"].api_rate_limit


def make_limiter(app, blueprint):
    from flask_limiter import Limiter

    settings = app.config["VERITY"]
    storage_uri = settings.require_redis_url()
    limiter = Limiter(
        key_func=rate_key,
        app=app,
        storage_uri=storage_uri,
        strategy="moving-window",
        headers_enabled=True,
        key_prefix="verity-limits",
        default_limits=[],  # only the API is limited: health, readiness, metrics and the page are not
        swallow_errors=True,  # a Redis outage must not turn every API call into a 500
    )
    limiter.limit(rate_limit_value, key_func=rate_key)(blueprint)
    return limiter


class Overloaded(ApiError):
    """503 with Retry-After: the analysis queue is past its bound."""


def check_backpressure() -> None:
    """Refuse new submits while the analysis queue is deeper than VERITY_API_MAX_QUEUE_DEPTH."""
    from core.queue import analysis_queue

    settings = current_app.config["VERITY"]
    try:
        depth = analysis_queue(settings, current_app.extensions["verity.redis"]).count
    except RedisError:
        # Redis down: accept anyway; the row is the record and the reconciler enqueues it later.
        log.warning("queue depth unknown (Redis unreachable); accepting the submit")
        return
    if depth >= settings.api_max_queue_depth:
        raise Overloaded(503, "overloaded", f"the analysis queue is full ({depth} waiting); retry later",
                         retry_after=defaults.API_BACKPRESSURE_RETRY_AFTER)
