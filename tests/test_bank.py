"""The known-fakes bank: a confirmed fake that comes back re-encoded, resized, cropped or mirrored
is recognised (PDQ for images, vPDQ for videos), unrelated media is not; the worker blocks a
match before the detector's score counts, sends a near miss to review; a moderator's confirmed
fake goes into the bank and out again when an admin revises it; the ThreatExchange CSV round
trip; the CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner
from mediagen import face_photo_paths, jpeg_bytes, no_face_image
from PIL import Image, ImageOps
from sqlalchemy import select

from core.bank import BankCache, BankIndex, add_entry, export_csv, import_csv, remove_entry
from core.models import AuditEvent, BankEntry, BankSource
from detector.perceptual import (
    PDQ_MATCH_DISTANCE,
    MediaHashes,
    hamming,
    hash_media,
    pdq_dihedral,
    pdq_of_rgb,
)


def _photo(i: int) -> Image.Image:
    return Image.open(face_photo_paths(i + 1)[i]).convert("RGB")


def _jpeg(im: Image.Image, quality: int = 90) -> bytes:
    return jpeg_bytes(im, quality)


def _hashes(im: Image.Image) -> MediaHashes:
    return MediaHashes(pdq=pdq_dihedral(np.asarray(im)))


def _entry(i: int, **kw) -> BankEntry:
    from detector.perceptual import pdq_trims

    rgb = np.asarray(_photo(i))
    h = pdq_of_rgb(rgb)
    return BankEntry(id=f"e{i}", kind="image", pdq=h.hex, pdq_quality=h.quality, source=kw.get("source", "cli"),
                     pdq_trims=[t.hex for t in pdq_trims(rgb)], fingerprint=h.hex, created_by="test")


# --- matching, pure --------------------------------------------------------------------------

def _variants(im: Image.Image) -> dict[str, Image.Image]:
    w, h = im.size
    return {
        "resized to 70%": im.resize((int(w * 0.7), int(h * 0.7)), Image.BILINEAR),
        "JPEG quality 60": Image.open(io.BytesIO(_jpeg(im, 60))),
        "mirrored": ImageOps.mirror(im),
        "5% trimmed off each side": im.crop((int(w * 0.05), int(h * 0.05), w - int(w * 0.05), h - int(h * 0.05))),
        "resized, recompressed and mirrored": ImageOps.mirror(
            Image.open(io.BytesIO(_jpeg(im.resize((int(w * 0.8), int(h * 0.8))), 70)))),
    }


def test_a_known_photo_is_recognised_after_resize_recompression_mirror_and_crop():
    index = BankIndex.build([_entry(0)])
    for name, variant in _variants(_photo(0)).items():
        matches = index.match(None, _hashes(variant.convert("RGB")))
        assert [(m.entry_id, m.near) for m in matches] == [("e0", False)], name
        assert matches[0].algorithm == "pdq" and matches[0].distance <= PDQ_MATCH_DISTANCE, (name, matches)


def test_unrelated_photos_do_not_match():
    index = BankIndex.build([_entry(0)])
    for i in range(1, 6):
        assert index.match(None, _hashes(_photo(i))) == [], i
    assert index.match(None, _hashes(no_face_image((640, 480)))) == []


def test_exact_bytes_match_by_sha256_and_only_active_entries_count():
    e = _entry(0)
    e.sha256 = "ab" * 32
    index = BankIndex.build([e])
    [m] = index.match("ab" * 32, None)
    assert (m.algorithm, m.distance, m.entry_id) == ("sha256", 0, "e0")
    assert BankIndex.build([]).match("ab" * 32, _hashes(_photo(0))) == []


def test_pdq_hashes_are_threatexchanges():
    """Same 64-hex string as the reference wrapper (threatexchange, as HMA uses it), and the
    same distance as its comparison."""
    from threatexchange.signal_type.pdq.pdq_hasher import _pdq_from_numpy_array
    from threatexchange.signal_type.pdq.signal import PdqSignal

    rgb = np.asarray(_photo(0).resize((400, 500)))
    ours = pdq_of_rgb(rgb)
    assert (ours.hex, ours.quality) == _pdq_from_numpy_array(rgb)
    other = pdq_of_rgb(np.asarray(_photo(1).resize((400, 500))))
    assert PdqSignal.compare_hash(ours.hex, other.hex, 256).distance.distance == hamming(ours.hex, other.hex)


def _clip(path: Path, photos: list[int], seconds_each: float = 2.0, fps: int = 10, size=(480, 360)) -> Path:
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.options = {"preset": "ultrafast", "g": str(fps)}
    for i in photos:
        base = np.asarray(ImageOps.pad(_photo(i), size, color=(90, 100, 110)))
        for k in range(int(seconds_each * fps)):
            frame = np.ascontiguousarray(np.roll(base, int(4 * np.sin(k / 4)), axis=1))
            for p in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(p)
    for p in stream.encode():
        container.mux(p)
    container.close()
    return path


def _reencode(src: Path, dst: Path, bit_rate: int, scale: float) -> Path:
    """Another bitrate, size and GOP: what a platform's transcoder does to a re-upload."""
    with av.open(str(src)) as inp:
        vin = inp.streams.video[0]
        out = av.open(str(dst), "w")
        vout = out.add_stream("libx264", rate=vin.average_rate or 10)
        vout.width, vout.height = int(vin.width * scale) // 2 * 2, int(vin.height * scale) // 2 * 2
        vout.pix_fmt = "yuv420p"
        vout.bit_rate = bit_rate
        vout.options = {"preset": "veryfast", "g": "25"}
        for frame in inp.decode(vin):
            img = frame.to_image().resize((vout.width, vout.height))
            for p in vout.encode(av.VideoFrame.from_image(img)):
                out.mux(p)
        for p in vout.encode():
            out.mux(p)
        out.close()
    return dst


def test_a_known_video_is_recognised_after_reencoding_and_another_is_not(tmp_path, shared_detector):
    known = _clip(tmp_path / "known.mp4", [0, 1, 2, 3])
    entry_hashes = hash_media(known, "video")
    assert 6 <= len(entry_hashes.vpdq) <= 10
    entry = BankEntry(id="v1", kind="video", vpdq=[str(f) for f in entry_hashes.vpdq], source="cli", created_by="t",
                      fingerprint="v1")
    index = BankIndex.build([entry])
    again = _reencode(known, tmp_path / "again.mp4", bit_rate=150_000, scale=0.7)
    # the worker's query: the frames the detector samples, hashed in the same decode
    result = shared_detector.analyze_path(again, hashes=True)
    [m] = index.match(None, MediaHashes.from_dict(result.hashes))
    assert (m.entry_id, m.algorithm, m.near) == ("v1", "vpdq", False) and m.match_percent >= 80
    other = _clip(tmp_path / "other.mp4", [4, 5, 6, 7])
    assert index.match(None, MediaHashes.from_dict(shared_detector.analyze_path(other, hashes=True).hashes)) == []
    # a still of the known fake video, posted as a photo, matches its frames
    still = np.asarray(ImageOps.pad(_photo(2), (480, 360), color=(90, 100, 110)))
    [m] = index.match(None, MediaHashes(pdq=pdq_dihedral(still)))
    assert (m.entry_id, m.algorithm, m.near) == ("v1", "pdq", False)


# --- the service -----------------------------------------------------------------------------

def _api_upload(client, data: bytes) -> str:
    r = client.post("/api/v1/uploads", data={"file": (io.BytesIO(data), "x.jpg")}, content_type="multipart/form-data")
    assert r.status_code == 202, r.get_json()
    return r.get_json()["id"]


def test_the_worker_blocks_a_known_fake_whatever_the_score(app, client, settings, run_jobs, tmp_path):
    from cli import main

    known = tmp_path / "known.jpg"
    known.write_bytes(_jpeg(_photo(0)))
    env = {"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url}
    r = CliRunner().invoke(main, ["bank", "add", str(known), "--note", "viral swap", "--data-dir",
                                  str(settings.data_dir)], env=env)
    assert r.exit_code == 0, r.output
    entry_id = r.output.split()[0]
    small = _photo(0).resize((500, 600))
    uid = _api_upload(client, _jpeg(small, 60))
    run_jobs()
    body = client.get(f"/api/v1/uploads/{uid}").get_json()
    assert body["status"] == "blocked" and body["decision"] == "block", body
    assert body["reasons"][0].startswith(f"known_fake: bank entry {entry_id}")
    [m] = body["analysis"]["matches"]
    assert (m["entry_id"], m["algorithm"], m["near"], m["source"]) == (entry_id, "pdq", False, "cli")
    assert body["review"] is None  # a human confirmed it already (VERITY_KNOWN_FAKE_NEEDS_REVIEW=false)
    # `verity bank match` says the same from the command line
    r = CliRunner().invoke(main, ["bank", "match", str(known), "--data-dir", str(settings.data_dir)], env=env)
    assert r.exit_code == 0 and "known_fake" in r.output


def test_a_near_miss_goes_to_review(app, client, settings, run_jobs):
    photo = _photo(1).resize((400, 500))
    h = _hashes(photo).pdq[0]
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(h.hex), dtype=np.uint8))
    bits[:45] ^= 1  # 45 bits away: a near miss (32-63)
    near_hex = np.packbits(bits).tobytes().hex()
    with app.extensions["verity.db"].session() as s:
        import_csv(s, io.StringIO(f"signal_type,signal_str\npdq,{near_hex}\n"), "test")
        s.commit()
    uid = _api_upload(client, _jpeg(photo))
    run_jobs()
    body = client.get(f"/api/v1/uploads/{uid}").get_json()
    assert body["status"] in ("in_review", "blocked"), body
    assert body["analysis"]["matches"][0]["near"] is True and body["analysis"]["matches"][0]["distance"] == 45
    if body["status"] == "in_review":
        assert body["review"]["reason"] in ("near_known_fake", "score_in_review_band")


def _signed_in(app, name: str):
    from tests.review.kit import Browser

    b = Browser(app)
    assert b.login(name).status_code == 302
    return b


def test_a_confirmed_fake_enters_the_bank_and_a_revision_takes_it_out(settings, run_jobs, authorize):
    from app import create_app
    from tests.review.kit import add_user

    app = create_app({"VERITY": settings, "TESTING": True, "VERITY_COOKIE_SECURE": False})
    client = app.test_client()
    authorize(app, client)
    add_user(app, "mod")
    add_user(app, "boss", role="admin")
    with app.extensions["verity.db"].session() as s:
        from core.overrides import save_overrides

        save_overrides(s, {"review_threshold": 0.0, "block_threshold": 1.0}, "test")  # everything to review
    first = _api_upload(client, _jpeg(_photo(2)))
    run_jobs()
    mod = _signed_in(app, "mod")
    item = mod.post("/review/next", headers={"Accept": "application/json"}).get_json()["item_id"]
    assert mod.post(f"/review/items/{item}/decide", data={"verdict": "confirmed_fake", "note": "swap"}).status_code == 302
    with app.extensions["verity.db"].session() as s:
        [e] = s.scalars(select(BankEntry)).all()
        assert (e.source, e.upload_id, e.decision_id is not None, e.active) == (BankSource.DECISION, first, True, True)
        assert s.scalar(select(AuditEvent).where(AuditEvent.action == "bank.added")).actor == "moderator:mod"
    # the same swap again, resized and recompressed: blocked by the bank at once
    again = _api_upload(client, _jpeg(_photo(2).resize((700, 875)), 70))
    run_jobs()
    assert client.get(f"/api/v1/uploads/{again}").get_json()["status"] == "blocked"
    boss = _signed_in(app, "boss")
    r = boss.post(f"/review/uploads/{first}/revise", data={"verdict": "authentic", "note": "it was real"})
    assert r.status_code == 302
    with app.extensions["verity.db"].session() as s:
        assert s.get(BankEntry, e.id).removed_at is not None
        assert s.scalar(select(AuditEvent).where(AuditEvent.action == "bank.removed")).actor == "moderator:boss"
    third = _api_upload(client, _jpeg(_photo(2).resize((650, 812)), 75))
    run_jobs()
    assert client.get(f"/api/v1/uploads/{third}").get_json()["analysis"]["matches"] == []
    app.extensions["verity.db"].dispose()


def test_threatexchange_csv_round_trip(app, tmp_path, shared_detector):
    """Export writes the columns of `threatexchange dataset --csv`; its PDQ signals pass the
    reference validator; importing it into another bank gives the same hashes."""
    from threatexchange.signal_type.pdq.signal import PdqSignal

    video = hash_media(_clip(tmp_path / "v.mp4", [0, 1]), "video")
    with app.extensions["verity.db"].session() as s:
        add_entry(s, "image", source="cli", actor="test", hashes=_hashes(_photo(0)), sha256="cd" * 32)
        add_entry(s, "video", source="cli", actor="test", hashes=video)
        gone, _ = add_entry(s, "image", source="cli", actor="test", hashes=_hashes(_photo(3)))
        remove_entry(s, gone.id, "test", "mistake")
        s.commit()
        out = io.StringIO()
        assert export_csv(s, out) == 2
    rows = list(__import__("csv").DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == ["signal_type", "signal_str", "collab", "category", "tags"]
    assert {r["signal_type"] for r in rows} == {"pdq", "vpdq"} and all(r["category"] == "POSITIVE_CLASS" for r in rows)
    pdq_row = next(r for r in rows if r["signal_type"] == "pdq")
    assert PdqSignal.validate_signal_str(pdq_row["signal_str"]) == pdq_row["signal_str"]
    vpdq_row = next(r for r in rows if r["signal_type"] == "vpdq")
    assert all(len(f.split(",")) == 3 for f in json.loads(vpdq_row["signal_str"]))  # "hex,quality,seconds"
    # into an empty bank, twice
    from core.db import Database, upgrade

    other_url = f"sqlite:///{tmp_path / 'other.db'}"
    upgrade(other_url)
    db = Database(other_url)
    with db.session() as s:
        first = import_csv(s, io.StringIO(out.getvalue() + "url,https://example.com,verity,POSITIVE_CLASS,x\n"), "t")
        second = import_csv(s, io.StringIO(out.getvalue()), "t")
        s.commit()
        pdqs = {e.pdq for e in s.scalars(select(BankEntry)) if e.pdq}
    db.dispose()
    assert (first.added, first.skipped) == (2, {"signal type url": 1}) and (second.added, second.already) == (0, 2)
    assert pdqs == {pdq_row["signal_str"]}


def test_the_index_follows_the_bank(app):
    cache = BankCache()
    with app.extensions["verity.db"].session() as s:
        assert len(cache.get(s)) == 0
        e, _ = add_entry(s, "image", source="cli", actor="t", hashes=_hashes(_photo(0)))
        s.commit()
        assert len(cache.get(s)) == 1
        remove_entry(s, e.id, "t", "mistake")
        s.commit()
        assert len(cache.get(s)) == 0


@pytest.fixture(autouse=True)
def _photos_needed():
    face_photo_paths(8)


def test_the_bank_page_lists_searches_and_removes_for_admins_only(settings):
    from app import create_app
    from tests.review.kit import add_user

    app = create_app({"VERITY": settings, "TESTING": True, "VERITY_COOKIE_SECURE": False})
    add_user(app, "mod")
    add_user(app, "boss", role="admin")
    with app.extensions["verity.db"].session() as s:
        a, _ = add_entry(s, "image", source="cli", actor="test", hashes=_hashes(_photo(0)), note="viral swap of a mayor")
        b, _ = add_entry(s, "image", source="cli", actor="test", hashes=_hashes(_photo(1)), note="scam call still")
        s.commit()
    assert _signed_in(app, "mod").get("/review/admin/bank").status_code == 403
    boss = _signed_in(app, "boss")
    page = boss.get("/review/admin/bank").get_data(as_text=True)
    assert a.id in page and b.id in page and "2 active entries" in page
    found = boss.get("/review/admin/bank?q=mayor").get_data(as_text=True)
    assert a.id in found and b.id not in found
    assert b.id in boss.get(f"/review/admin/bank?q={b.id[:6]}").get_data(as_text=True)
    r = boss.post(f"/review/admin/bank/{a.id}/remove", data={"reason": "it was satire"})
    assert r.status_code == 302
    with app.extensions["verity.db"].session() as s:
        assert s.get(BankEntry, a.id).removed_by == "moderator:boss"
        ev = s.scalar(select(AuditEvent).where(AuditEvent.action == "bank.removed"))
        assert ev.detail["entry_id"] == a.id and ev.detail["reason"] == "it was satire"
    assert a.id not in boss.get("/review/admin/bank").get_data(as_text=True)
    assert a.id in boss.get("/review/admin/bank?removed=1").get_data(as_text=True)
    app.extensions["verity.db"].dispose()
