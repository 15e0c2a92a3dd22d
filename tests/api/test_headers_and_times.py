"""What a platform's HTTP client sees besides the body: Retry-After only where it means
something (429, 503), times in RFC 3339 with their `Z`, and Verity's own words for a refusal."""

from __future__ import annotations

import re
import struct
import zlib

from apihelpers import bearer, make_key, multipart
from mediagen import jpeg_bytes, no_face_image

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


def test_retry_after_only_on_429_and_503(api_app):
    """Flask-Limiter put Retry-After (e.g. 57) on every answer, 200 and 202 included."""
    c = api_app.test_client()
    h = bearer(make_key(api_app, rate_limit="3/minute"))
    ok = [c.get("/api/v1/me", headers=h), c.post("/api/v1/uploads", data=multipart(jpeg_bytes(no_face_image())),
                                                   headers=h, content_type="multipart/form-data")]
    assert [r.status_code for r in ok] == [200, 202]
    assert all("Retry-After" not in r.headers for r in ok), [dict(r.headers) for r in ok]
    c.get("/api/v1/me", headers=h)
    c.get("/api/v1/me", headers=h)  # the limit is per route: the third on /me
    refused = c.get("/api/v1/me", headers=h)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0


def test_times_are_rfc3339_utc_with_z(api_app):
    c = api_app.test_client()
    h = bearer(make_key(api_app))
    uid = c.post("/api/v1/uploads", data=multipart(jpeg_bytes(no_face_image())), headers=h,
                 content_type="multipart/form-data").get_json()["id"]
    body = c.get(f"/api/v1/uploads/{uid}", headers=h).get_json()
    for field in ("created_at", "updated_at"):
        assert RFC3339_UTC.match(body[field]), body[field]
    token = c.post("/api/v1/page-tokens", headers=h, json={}).get_json()
    assert RFC3339_UTC.match(token["expires_at"]), token


def _png_header(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))


def test_a_png_header_bomb_is_refused_with_veritys_cap(api_app):
    """A 20000x20000 PNG header was refused with Pillow's internal limit (178,956,970 pixels)."""
    c = api_app.test_client()
    r = c.post("/api/v1/uploads", data=multipart(_png_header(20000, 20000), "bomb.png"),
               headers=bearer(make_key(api_app)), content_type="multipart/form-data")
    assert r.status_code == 422 and r.get_json()["reason"] == "too_many_pixels"
    assert "40,000,000" in r.get_json()["message"] and "178" not in r.get_json()["message"]
