"""JSON errors {code, message, request_id} for every route, with the request id echoed back."""

from __future__ import annotations

import uuid

from flask import Flask, g, jsonify, request
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import OperationalError as SQLAlchemyOperationalError
from werkzeug.exceptions import HTTPException

from core.errors import ApiError

REQUEST_ID_HEADER = "X-Request-ID"


def request_id() -> str:
    rid = g.get("request_id")
    if rid is None:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        # Accept a client's id only when it is short and plain; otherwise mint our own.
        ok = 0 < len(incoming) <= 64 and all(c.isalnum() or c in "-_." for c in incoming)
        rid = g.request_id = incoming if ok else uuid.uuid4().hex
    return rid


BACKEND_RETRY_AFTER_SECONDS = 5
"""Retry-After sent when the database or Redis cannot be reached."""


def error_response(status: int, code: str, message: str, **extra):
    body = {"code": code, "message": message, "request_id": request_id(), **extra}
    return jsonify(body), status


_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
               413: "too_large", 415: "unsupported_type", 422: "unreadable", 429: "rate_limited"}


def init_app(app: Flask) -> None:
    @app.before_request
    def _stamp_request_id():
        request_id()

    @app.before_request
    def _refuse_nul_parameters():
        # A NUL in a query parameter or a path part reaches the database otherwise, and PostgreSQL
        # refuses it with an error (a 500 here). No Verity parameter can hold one: say so.
        values = list(request.args.values())
        values += [v for v in (request.view_args or {}).values() if isinstance(v, str)]
        if request.mimetype == "application/x-www-form-urlencoded":  # the review forms (small)
            values += request.form.values()
        if any("\x00" in v for v in values):
            return error_response(400, "bad_request", "a parameter contains a NUL character")
        return None

    @app.after_request
    def _echo_request_id(resp):
        resp.headers[REQUEST_ID_HEADER] = request_id()
        if resp.status_code not in (429, 503):
            # Flask-Limiter adds Retry-After to every limited response; it means "wait before
            # retrying", so it belongs to a refusal only (RFC 9110).
            resp.headers.pop("Retry-After", None)
        elif "verity_retry_after" in g:
            # A refusal of our own (e.g. segments_behind) says its own wait; the limiter's
            # after_request, which runs before this one, must not replace it with its window.
            resp.headers["Retry-After"] = str(g.verity_retry_after)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        return resp

    @app.errorhandler(ApiError)
    def _api_error(e: ApiError):
        return error_response(e.status, e.code, e.message, **e.extra)

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException):
        status = e.code or 500
        if status == 413:
            limit = app.config["VERITY"].max_upload_bytes
            return error_response(413, "too_large", f"upload larger than the limit of {limit} bytes",
                                  limit_bytes=limit)
        resp, status = error_response(status, _HTTP_CODES.get(status, "http_error"), e.description or e.name)
        for name, value in e.get_headers():  # e.g. Allow on 405 (RFC 9110), Retry-After
            if name.lower() != "content-type":
                resp.headers[name] = value
        return resp, status

    @app.errorhandler(SQLAlchemyOperationalError)
    @app.errorhandler(RedisConnectionError)
    def _backend_unavailable(e: Exception):
        # The database or Redis is down or restarting: nothing was accepted, so say "try again"
        # (503 + Retry-After), which clients and load balancers retry, not "we broke" (500).
        app.logger.warning("backend unavailable (request %s): %s", request_id(), type(e).__name__)
        resp, status = error_response(503, "unavailable",
                                      "a backing service is unavailable; nothing was stored, retry shortly")
        resp.headers["Retry-After"] = str(BACKEND_RETRY_AFTER_SECONDS)
        return resp, status

    @app.errorhandler(Exception)
    def _unexpected(e: Exception):
        app.logger.exception("unhandled error (request %s)", request_id())
        return error_response(500, "internal_error", "internal error; quote the request id when reporting it")
