"""The OpenAPI 3.1 document of /api/v1, built from the pydantic schemas (core/schemas.py).
Served at /api/v1/openapi.json; committed as app/openapi.json by scripts/dump_openapi.py, and a
test fails when the two differ."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

from core import defaults
from core import schemas as s

COMMITTED = Path(__file__).resolve().parents[1] / "openapi.json"
REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _json_response(description: str, schema: str, headers: dict | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}
    if headers:
        r["headers"] = headers
    return r


RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Bad request (`missing_file`, `invalid_request`, `invalid_idempotency_key`).",
        401: "Missing, unknown or revoked API key (`unauthorized`).",
        404: "No such resource for this key (`not_found`).",
        413: "Too large (`too_large`, `too_many_files`).",
        415: "Not an allowed media type, judged from the bytes (`unsupported_type`).",
        422: "Unreadable media (`unreadable`), invalid fields (`invalid_request`) or an Idempotency-Key "
             "reused with a different body (`idempotency_key_reused`).",
        429: "Rate limit of this key exceeded (`rate_limited`).",
        503: "Back-pressure: the analysis queue is full (`overloaded`).",
    }
    out: dict[str, Any] = {}
    for c in codes:
        out[str(c)] = _json_response(text[c], "Error", RETRY_AFTER if c in (429, 503) else None)
    return out


UPLOAD_ID = {"name": "upload_id", "in": "path", "required": True,
             "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}
DELIVERY_ID = {"name": "delivery_id", "in": "path", "required": True,
               "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}
LIVE_ID = {"name": "session_id", "in": "path", "required": True,
           "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}
WAIT = {"name": "wait", "in": "query", "required": False,
        "schema": {"type": "number", "minimum": 0, "maximum": defaults.API_MAX_WAIT_SECONDS}}
IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False,
               "description": "Same key + same body: the first upload is returned (no second row or job); "
                              "same key + another body: 422.",
               "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[!-~]+$"}}
SUBMIT_FIELDS = {
    "external_id": {"type": "string", "minLength": 1, "maxLength": 255,
                    "description": "The platform's own id for the content."},
    "metadata": {"type": "string", "description": "A JSON object (at most "
                 f"{defaults.API_METADATA_MAX_BYTES} bytes), stored and returned as is."},
}


def _paths() -> dict[str, Any]:
    common = _errors(400, 401, 429)  # 400: e.g. a NUL in a parameter (app/errors.py)
    submit_errors = _errors(400, 401, 413, 415, 422, 429, 503)
    return {
        "/api/v1/uploads": {
            "post": {
                "operationId": "createUpload",
                "summary": "Submit one image or video for analysis",
                "parameters": [IDEMPOTENCY,
                               {"name": "external_id", "in": "query", "required": False,
                                "description": "For raw-body submits (a form field wins).", "schema": SUBMIT_FIELDS["external_id"]},
                               {"name": "metadata", "in": "query", "required": False,
                                "description": "For raw-body submits (a form field wins).", "schema": SUBMIT_FIELDS["metadata"]}],
                "requestBody": {"required": True, "content": {
                    "multipart/form-data": {"schema": {
                        "type": "object", "required": ["file"],
                        "properties": {"file": {"type": "string", "format": "binary"}, **SUBMIT_FIELDS}}},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                    "image/*": {"schema": {"type": "string", "format": "binary"}},
                    "video/*": {"schema": {"type": "string", "format": "binary"}},
                }},
                "responses": {"202": _json_response("Accepted (or replayed, with Idempotent-Replayed: true)",
                                                    "UploadAccepted"), **submit_errors},
            },
            "get": {
                "operationId": "listUploads",
                "summary": "This key's uploads, newest first; filter by external_id",
                "parameters": [{"name": "external_id", "in": "query", "required": False,
                                "schema": {"type": "string"}},
                               {"name": "limit", "in": "query", "required": False,
                                "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 50}}],
                "responses": {"200": _json_response("Uploads", "UploadList"), **_errors(400, 401, 429)},
            },
        },
        "/api/v1/uploads:batch": {
            "post": {
                "operationId": "createUploadBatch",
                "summary": f"Submit up to {defaults.API_BATCH_MAX_FILES} files in one call",
                "parameters": [IDEMPOTENCY],
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                    "type": "object", "required": ["file"],
                    "properties": {
                        "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                                 "minItems": 1, "maxItems": defaults.API_BATCH_MAX_FILES},
                        "items": {"type": "string", "description": "JSON array of {external_id, metadata}, "
                                                                   "in the order of the files."}}}}}},
                "responses": {"202": _json_response("Per-file results (an id, or an error)", "BatchAccepted"),
                              **_errors(400, 401, 413, 422, 429, 503)},
            },
        },
        "/api/v1/uploads/{upload_id}": {
            "get": {
                "operationId": "getUpload",
                "summary": "Status, decision and analysis; ?wait= long-polls until a terminal status",
                "parameters": [UPLOAD_ID, {"name": "wait", "in": "query", "required": False,
                                           "schema": {"type": "number", "minimum": 0,
                                                      "maximum": defaults.API_MAX_WAIT_SECONDS}}],
                "responses": {"200": _json_response("The upload", "UploadOut"), **_errors(400, 401, 404, 429)},
            },
            "delete": {
                "operationId": "withdrawUpload",
                "summary": "The platform withdrew the content: blob removed, record kept (status withdrawn)",
                "parameters": [UPLOAD_ID],
                "responses": {"200": _json_response("The withdrawn upload", "UploadOut"), **_errors(400, 401, 404, 429)},
            },
        },
        "/api/v1/page-tokens": {
            "post": {
                "operationId": "createPageToken",
                "summary": "A short-lived token that lets one of your signed-in users upload through the page "
                           "(`/?token=...`) as yours",
                "requestBody": {"required": False, "content": {"application/json": {"schema": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"subject": {"type": ["string", "null"], "minLength": 1, "maxLength": 255,
                                               "description": "Your id for the user (kept as page_user)"}}}}}},
                "responses": {"201": _json_response("The token and the page's URL with it", "PageTokenOut"),
                              **_errors(401, 422, 429)},
            },
        },
        "/api/v1/me": {
            "get": {"operationId": "getMe", "summary": "This key's settings",
                    "responses": {"200": _json_response("The key", "ClientOut"), **common}},
        },
        "/api/v1/webhooks/deliveries": {
            "get": {
                "operationId": "listDeliveries", "summary": "This key's webhook deliveries, newest first",
                "parameters": [{"name": "upload_id", "in": "query", "required": False, "schema": {"type": "string"}},
                               {"name": "state", "in": "query", "required": False,
                                "schema": {"type": "string", "enum": ["pending", "delivered", "failed"]}}],
                "responses": {"200": _json_response("Deliveries", "DeliveryList"), **common},
            },
        },
        "/api/v1/webhooks/deliveries/{delivery_id}": {
            "get": {"operationId": "getDelivery", "summary": "One delivery with every attempt",
                    "parameters": [DELIVERY_ID],
                    "responses": {"200": _json_response("The delivery", "DeliveryOut"), **_errors(400, 401, 404, 429)}},
        },
        "/api/v1/live": {
            "post": {
                "operationId": "openLiveSession",
                "summary": "Open a live session for one call participant",
                "requestBody": {"required": False, "content": {"application/json": {"schema": _ref("LiveOpenIn")}}},
                "responses": {"201": _json_response("The session (Location: its URL)", "LiveSessionOut"),
                              **_errors(400, 401, 422), "429": _json_response(
                                  f"Rate limit (`rate_limited`) or {defaults.LIVE_MAX_OPEN_SESSIONS} open sessions "
                                  "for this key (`too_many_sessions`)", "Error", RETRY_AFTER)},
            },
        },
        "/api/v1/live/{session_id}": {
            "get": {
                "operationId": "getLiveSession",
                "summary": "The rolling verdict, the timeline of segments and the evidence; ?wait= long-polls "
                           "while segments are queued",
                "parameters": [LIVE_ID, WAIT],
                "responses": {"200": _json_response("The session", "LiveSessionOut"), **_errors(400, 401, 404, 429)},
            },
            "delete": {
                "operationId": "endLiveSession",
                "summary": "End the session (twice changes nothing): the summary; live.ended fires",
                "parameters": [LIVE_ID],
                "responses": {"200": _json_response("The ended session", "LiveSessionOut"),
                              **_errors(400, 401, 404, 429)},
            },
        },
        "/api/v1/live/{session_id}/end": {
            "post": {
                "operationId": "endLiveSessionPost", "summary": "The same as DELETE /api/v1/live/{session_id}",
                "parameters": [LIVE_ID],
                "responses": {"200": _json_response("The ended session", "LiveSessionOut"),
                              **_errors(400, 401, 404, 429)},
            },
        },
        "/api/v1/live/{session_id}/segments": {
            "post": {
                "operationId": "addLiveSegment",
                "summary": "One segment of the call: a standalone MP4/WebM chunk "
                           f"({defaults.LIVE_SEGMENT_MIN_SECONDS:g}-{defaults.LIVE_SEGMENT_MAX_SECONDS:g} s; restart "
                           f"MediaRecorder per segment) or 2-{defaults.LIVE_SEGMENT_MAX_FRAMES} JPEG frames; analysed "
                           "on the live queue before uploads and answered with its score and the session's rolling "
                           "verdict",
                "parameters": [LIVE_ID, {
                    "name": "wait", "in": "query", "required": False,
                    "description": f"Seconds to wait for the answer (default {defaults.LIVE_ANSWER_WAIT_SECONDS:g}); "
                                   "past it: 202, GET the session.",
                    "schema": {"type": "number", "minimum": 0, "maximum": defaults.API_MAX_WAIT_SECONDS}},
                    {"name": "start", "in": "query", "required": False,
                     "description": "For raw-body chunks (a form field wins).", "schema": {"type": "number"}}],
                "requestBody": {"required": True, "content": {
                    "multipart/form-data": {"schema": {
                        "type": "object", "required": ["start"],
                        "properties": {
                            "file": {"type": "string", "format": "binary", "description": "One video chunk."},
                            "frame": {"type": "array", "items": {"type": "string", "format": "binary"},
                                      "minItems": 2, "maxItems": defaults.LIVE_SEGMENT_MAX_FRAMES,
                                      "description": "JPEG frames in order (instead of `file`)."},
                            "start": {"type": "number", "minimum": 0,
                                      "description": "The segment's start in the call, in seconds."},
                            "fps": {"type": "number", "minimum": 0.1, "maximum": 60, "default": 5,
                                    "description": "Frames: their rate."}}}},
                    "video/*": {"schema": {"type": "string", "format": "binary"}},
                }},
                "responses": {
                    "200": _json_response("Analysed: the segment and the session", "LiveSegmentAnswer"),
                    "202": _json_response("Stored and queued; not analysed within `wait`", "LiveSegmentAnswer"),
                    "409": _json_response("The session ended (`session_ended`), or took its last segment "
                                          "(`too_many_segments`)", "Error"),
                    **_errors(400, 401, 404, 413, 415, 422), "429": _json_response(
                        f"Rate limit (`rate_limited`), or {defaults.LIVE_MAX_QUEUED_SEGMENTS} segments of this session "
                        "still waiting for a worker (`segments_behind`)", "Error", RETRY_AFTER)},
            },
        },
        "/api/v1/webhooks/deliveries/{delivery_id}/redeliver": {
            "post": {"operationId": "redeliver", "summary": "Send a delivery again (back-off starts over)",
                     "parameters": [DELIVERY_ID],
                     "responses": {"202": _json_response("Queued again", "DeliveryOut"), **_errors(400, 401, 404, 429)}},
        },
    }


def build_spec() -> dict[str, Any]:
    _, defs = models_json_schema([(m, "serialization") for m in s.RESPONSE_MODELS], ref_template=REF)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Verity platform API", "version": "1.0.0",
                 "description": "Submit media, learn allow / review / block by polling or by signed webhooks."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": _paths(),
        "webhooks": {
            event: {"post": {"summary": f"{event}: body is the GET /uploads/{{id}} shape, signed (Verity-Signature: "
                                        "v2=HMAC-SHA256(secret, timestamp.event_id.event.body))",
                             "requestBody": {"content": {"application/json": {"schema": _ref("UploadOut")}}},
                             "responses": {"2XX": {"description": "Received"}}}}
            for event in ("upload.analyzed", "upload.decided", "upload.failed")
        } | {
            event: {"post": {"summary": f"{event}: body is the GET /live/{{id}} shape, signed like the upload events",
                             "requestBody": {"content": {"application/json": {"schema": _ref("LiveSessionOut")}}},
                             "responses": {"2XX": {"description": "Received"}}}}
            for event in ("live.suspected", "live.ended")
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": defs["$defs"],
        },
    }
