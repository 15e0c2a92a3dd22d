"""Helpers for the review tests: accounts, a signed-in client, review items on real blobs."""

from __future__ import annotations

import hashlib
import re
import tempfile
from datetime import timedelta
from pathlib import Path

from mediagen import jpeg_bytes, no_face_image

PASSWORD = "correct horse battery"
_HASHES: dict[str, str] = {}


def add_user(app, name: str, role: str = "moderator", password: str = PASSWORD, blur: bool = True):
    from core.models import User

    with app.extensions["verity.db"].session() as s:
        u = User(username=name, role=role, blur_media=blur, active=True)
        if password not in _HASHES:  # the real scrypt hash, computed once per password per run
            u.set_password(password)
            _HASHES[password] = u.password_hash
        u.password_hash = _HASHES[password]
        s.add(u)
        s.commit()
        return u.id


def csrf_from(html: str) -> str:
    m = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


class Browser:
    """A test client that signs in like a person and carries the page's CSRF token."""

    def __init__(self, app):
        self.app = app
        self.client = app.test_client()
        self.token = None

    def login(self, name: str, password: str = PASSWORD):
        page = self.client.get("/auth/login")
        self.token = csrf_from(page.get_data(as_text=True))
        r = self.client.post("/auth/login", data={"username": name, "password": password,
                                                  "csrf_token": self.token})
        if r.status_code == 302:
            self.token = csrf_from(self.client.get("/review/").get_data(as_text=True))
        return r

    def get(self, url, **kw):
        return self.client.get(url, **kw)

    def post(self, url, data=None, **kw):
        data = dict(data or {})
        data.setdefault("csrf_token", self.token)
        return self.client.post(url, data=data, **kw)


def evidence_for(width: int, height: int, scores: list[float | None], kind: str = "image",
                 duration: float | None = None) -> dict:
    """Evidence shaped like DetectionResult.to_dict(): one face per frame with the given scores."""
    from detector.result import FaceEvidence, FrameEvidence, MediaInfo

    frames = []
    n = len(scores)
    for i, s in enumerate(scores):
        faces = [] if s is None else [FaceEvidence(box=[width * .3, height * .2, width * .6, height * .7],
                                                   landmarks=[[width * .4, height * .4]] * 5,
                                                   detection_score=0.99, fake_score=s)]
        t = (duration or 0) * (i + .5) / n if kind == "video" else 0.0
        frames.append(FrameEvidence(index=i * 3 if kind == "video" else 0, timestamp=t, faces=faces))
    from dataclasses import asdict

    media = MediaInfo(kind=kind, format="JPEG" if kind == "image" else "mov,mp4,m4a,3gp,3g2,mj2",
                      width=width, height=height, duration=duration)
    return {"media": asdict(media), "frames": [asdict(f) for f in frames]}


def make_item(app, *, score: float | None = 0.7, label: str = "suspected_fake", reason: str = "score_in_review_band",
              priority: int = 10, status: str = "in_review", kind: str = "image", data: bytes | None = None,
              mime: str | None = None, due_in: timedelta | None = timedelta(hours=24), age: timedelta = timedelta(0),
              evidence: dict | None = None, width: int = 320, height: int = 240, timings: dict | None = None,
              reasons: list[str] | None = None, model_version: str = "1.0.0") -> int:
    """Upload + blob + Analysis + ReviewItem, as the worker leaves them; returns the item id."""
    from core.models import Analysis, ReviewItem, Upload, new_id, utcnow

    if data is None:
        data = jpeg_bytes(no_face_image((width, height)))
    sha = hashlib.sha256(data).hexdigest()
    storage = app.extensions["verity.storage"]
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(data)
    storage.put_file(sha, Path(f.name))
    Path(f.name).unlink(missing_ok=True)
    now = utcnow() - age
    with app.extensions["verity.db"].session() as s:
        up = Upload(id=new_id(), sha256=sha, kind=kind, mime=mime or ("image/jpeg" if kind == "image" else "video/mp4"),
                    bytes=len(data), filename="x", status=status, source="api", width=width, height=height,
                    created_at=now, updated_at=now)
        s.add(up)
        s.flush()
        s.add(Analysis(upload_id=up.id, sha256=sha, model_name="verity-sbi", model_version=model_version, provider="CPUExecutionProvider",
                       score=score, label=label, reasons=reasons or [f"score {score}"],
                       timings=timings or {"decode": 5.0, "detect": 20.0, "classify": 9.0, "total": 34.0},
                       evidence=evidence if evidence is not None else evidence_for(width, height, [score]),
                       created_at=now))
        item = ReviewItem(upload_id=up.id, reason=reason, priority=priority, state="open",
                          due_at=(now + due_in) if due_in is not None else None, created_at=now, updated_at=now)
        s.add(item)
        s.commit()
        return item.id
