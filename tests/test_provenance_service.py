"""Provenance through the service: a file that declares itself AI-generated goes to review with
the label declared_synthetic, whatever the detector scored; a C2PA manifest shows as verified in
the API only against the operator's trust anchors; a camera-origin claim never clears an item."""

from __future__ import annotations

import io

import pytest
from mediagen import face_image, jpeg_bytes, no_face_image

c2pagen = pytest.importorskip("c2pagen")


def _upload(client, data: bytes) -> str:
    r = client.post("/api/v1/uploads", data={"file": (io.BytesIO(data), "x.jpg")}, content_type="multipart/form-data")
    assert r.status_code == 202, r.get_json()
    return r.get_json()["id"]


def _with_xmp(im, source_type: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, xmp=c2pagen.xmp_packet(source_type))
    return buf.getvalue()


def test_a_declared_synthetic_file_goes_to_review_with_its_claim(client, run_jobs):
    uid = _upload(client, _with_xmp(no_face_image((640, 480)), c2pagen.IPTC + "trainedAlgorithmicMedia"))
    run_jobs()
    body = client.get(f"/api/v1/uploads/{uid}").get_json()
    # no face: the detector alone would clear it; the file's own declaration sends it to a human
    assert body["status"] == "in_review" and body["label"] == "declared_synthetic", body
    assert body["review"]["reason"] == "declared_synthetic"
    assert body["reasons"][0].startswith("declared_synthetic: xmp digital source type trainedAlgorithmicMedia")
    assert "detector: no_face" in body["reasons"]
    p = body["analysis"]["provenance"]
    assert p["declared_synthetic"] and [(c["source"], c["verified"], c["declares"]) for c in p["claims"]] == \
        [("xmp", False, "synthetic")]


def test_a_camera_claim_never_clears_an_item(settings, run_jobs, authorize):
    """A file that says "digital capture" is routed by the detector as if it said nothing."""
    from app import create_app

    s = settings.with_(review_threshold=0.0, block_threshold=1.0)  # everything with a face to review
    app = create_app({"VERITY": s, "TESTING": True})
    client = app.test_client()
    authorize(app, client)
    uid = _upload(client, _with_xmp(face_image((800, 600), 400), c2pagen.IPTC + "digitalCapture"))
    run_jobs(s)
    body = client.get(f"/api/v1/uploads/{uid}").get_json()
    assert body["status"] == "in_review" and body["analysis"]["provenance"]["declared_capture"], body
    app.extensions["verity.db"].dispose()


def test_a_c2pa_manifest_is_verified_only_against_the_operators_anchors(settings, run_jobs, authorize, tmp_path):
    from app import create_app

    ca = c2pagen.make_ca()
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(ca.pem)
    for trusted in (False, True):
        # bytes of their own each time (identical bytes would reuse the first analysis)
        signed = c2pagen.sign(jpeg_bytes(no_face_image((640 + trusted * 8, 480))), "image/jpeg", c2pagen.make_signer(ca))
        s = settings.with_(c2pa_trust_anchors=(anchors,) if trusted else ())
        app = create_app({"VERITY": s, "TESTING": True})
        client = app.test_client()
        authorize(app, client, name=f"k{trusted}")
        uid = _upload(client, signed)
        run_jobs(s)
        body = client.get(f"/api/v1/uploads/{uid}").get_json()
        manifest = next(c for c in body["analysis"]["provenance"]["claims"] if c["kind"] == "manifest")
        assert manifest["verified"] is trusted, body["analysis"]["provenance"]
        assert body["label"] == "declared_synthetic" and body["status"] == "in_review"
        assert body["reasons"][0].startswith("declared_synthetic: verified c2pa" if trusted else "declared_synthetic: ")
        app.extensions["verity.db"].dispose()


def test_trust_anchors_are_checked_when_the_settings_load(tmp_path):
    from core.settings import SettingsError, load_settings

    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(SettingsError, match="VERITY_C2PA_TRUST_ANCHORS"):
        load_settings(env={"VERITY_C2PA_TRUST_ANCHORS": str(bad)}, data_dir=tmp_path, make_secret=False)
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(env={"VERITY_C2PA_TRUST_ANCHORS": str(tmp_path / "nope.pem")}, data_dir=tmp_path,
                      make_secret=False)
