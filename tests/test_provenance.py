"""detector.provenance on files made here: XMP digital source types, generator and camera
hints, and C2PA manifests signed by a test CA, verified against given anchors, offline."""

from __future__ import annotations

import http.server
import io
import json
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from c2pagen import IPTC, created_manifest, make_ca, make_signer, sign, with_bmff_xmp, xmp_packet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mediagen import no_face_image, png_bomb, write_video
from PIL import Image, PngImagePlugin

from detector.provenance import REASONS, Claim, Provenance, containers, read_provenance, vocab
from detector.provenance.manifests import reason_for, store_claims

TRAINED = IPTC + "trainedAlgorithmicMedia"
CAPTURE = IPTC + "digitalCapture"


# --- files --------------------------------------------------------------------------------------

def small_image(size=(96, 64)) -> Image.Image:
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def with_xmp(fmt: str, packet: bytes) -> bytes:
    """The image saved with an XMP packet: Pillow's `xmp=` for JPEG and WebP; for PNG (where
    Pillow 13 ignores it) the standard iTXt chunk, XML:com.adobe.xmp."""
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", packet.decode())
        return encode(small_image(), "PNG", pnginfo=info)
    return encode(small_image(), fmt, xmp=packet)


def exif_jpeg(**tags) -> bytes:
    exif = Image.Exif()
    for tag, value in tags.items():
        exif[{"make": 0x010F, "model": 0x0110, "software": 0x0131}[tag]] = value
    return encode(small_image(), "JPEG", exif=exif)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def one(prov: Provenance, **match) -> Claim:
    found = [c for c in prov.claims if all(getattr(c, k) == v for k, v in match.items())]
    assert len(found) == 1, (match, prov.to_dict())
    return found[0]


@pytest.fixture(scope="module")
def ca():
    return make_ca()


@pytest.fixture(scope="module")
def signer(ca):
    return make_signer(ca)


@pytest.fixture(scope="module")
def anchor(ca, tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("anchors") / "test-ca.pem"
    p.write_bytes(ca.pem)
    return p


@pytest.fixture(scope="module")
def other_anchor(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("anchors") / "other-ca.pem"
    p.write_bytes(make_ca("Some Other Root").pem)
    return p


@pytest.fixture(scope="module")
def signed_jpeg(signer) -> bytes:
    return sign(encode(small_image(), "JPEG", quality=90), "image/jpeg", signer)


# --- XMP --------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_xmp_trained_algorithmic_media_is_declared_synthetic_never_verified(tmp_path, fmt):
    path = write(tmp_path, f"x.{fmt.lower()}", with_xmp(fmt, xmp_packet(TRAINED)))
    prov = read_provenance(path, "image")
    claim = one(prov, source="xmp", kind="digital_source_type")
    assert claim.value == TRAINED
    assert claim.declares == "synthetic" and claim.verified is False
    assert prov.declared_synthetic and not prov.declared_capture
    assert "xmp" in prov.checked and "c2pa" in prov.checked
    assert prov.errors == []


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_xmp_digital_capture_is_declared_capture(tmp_path, fmt):
    path = write(tmp_path, f"c.{fmt.lower()}", with_xmp(fmt, xmp_packet(CAPTURE)))
    prov = read_provenance(path, "image")
    claim = one(prov, source="xmp", kind="digital_source_type")
    assert claim.value == CAPTURE and claim.declares == "capture" and not claim.verified
    assert prov.declared_capture and not prov.declared_synthetic


@pytest.mark.parametrize("written, canonical", [
    ("https://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia/",
     IPTC + "compositeWithTrainedAlgorithmicMedia"),
    ("compositeSynthetic", IPTC + "compositeSynthetic"),
    ("http://cv.iptc.org/newscodes/digitalsourcetype/algorithmicmedia", IPTC + "algorithmicMedia"),
])
def test_xmp_source_type_spellings_and_element_form(tmp_path, written, canonical):
    path = write(tmp_path, "v.jpg", with_xmp("JPEG", xmp_packet(written, as_element=True)))
    claim = one(read_provenance(path, "image"), source="xmp", kind="digital_source_type")
    assert claim.value == canonical and claim.declares == "synthetic"
    assert claim.detail["as_written"] == written


def test_xmp_creator_tool_naming_a_generator_is_a_hint(tmp_path):
    path = write(tmp_path, "t.webp", with_xmp("WEBP", xmp_packet(None, creator_tool="Midjourney v6")))
    prov = read_provenance(path, "image")
    assert one(prov, source="xmp", kind="generator").value == "Midjourney"
    assert prov.declared_synthetic


def test_xmp_that_is_not_xml_or_declares_entities_is_an_error_not_an_exception(tmp_path):
    bomb = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
            b"<x:xmpmeta xmlns:x='adobe:ns:meta/'>&b;</x:xmpmeta>")
    for i, packet in enumerate([b"<x:xmpmeta><unclosed", bomb]):
        prov = read_provenance(write(tmp_path, f"b{i}.jpg", with_xmp("JPEG", packet)), "image")
        assert prov.claims == [] and any(e.startswith("xmp:") for e in prov.errors), prov.errors


def test_mp4_xmp_uuid_box(tmp_path):
    video = write_video(tmp_path / "v.mp4", no_face_image((160, 120)), seconds=0.5)
    path = write(tmp_path, "x.mp4", with_bmff_xmp(video.read_bytes(), xmp_packet(TRAINED)))
    prov = read_provenance(path, "video")
    assert one(prov, source="xmp", kind="digital_source_type").value == TRAINED
    assert prov.declared_synthetic and "c2pa" in prov.checked and prov.errors == []


# --- generator and camera hints -------------------------------------------------------------

def test_png_parameters_chunk_is_a_stable_diffusion_hint(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a portrait of a woman\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1")
    prov = read_provenance(write(tmp_path, "sd.png", encode(small_image(), "PNG", pnginfo=info)), "image")
    claim = one(prov, source="png-text", kind="generator")
    assert claim.value == "Stable Diffusion WebUI" and claim.declares == "synthetic" and not claim.verified
    assert claim.detail["field"] == "parameters" and "Steps: 20" in claim.detail["excerpt"]
    assert prov.declared_synthetic and "png-text" in prov.checked


def test_comfyui_prompt_and_workflow_make_one_hint_even_compressed_after_the_pixels(tmp_path):
    data = encode(small_image(), "PNG")
    iend = data.rindex(b"IEND") - 4

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    prompt = chunk(b"iTXt", b"prompt\x00\x01\x00\x00\x00" + zlib.compress(b'{"3": {"class_type": "KSampler"}}'))
    workflow = chunk(b"tEXt", b'workflow\x00{"nodes": []}')
    path = write(tmp_path, "comfy.png", data[:iend] + prompt + workflow + data[iend:])
    prov = read_provenance(path, "image")
    claim = one(prov, source="png-text", kind="generator")
    assert claim.value == "ComfyUI" and claim.detail["field"] == "prompt"
    assert claim.detail["also"] == ["workflow"] and "KSampler" in claim.detail["excerpt"]


def test_exif_software_naming_a_generator_is_a_hint(tmp_path):
    prov = read_provenance(write(tmp_path, "ff.jpg", exif_jpeg(software="Adobe Firefly")), "image")
    claim = one(prov, source="exif", kind="generator")
    assert claim.value == "Adobe Firefly" and claim.declares == "synthetic" and not claim.verified
    assert claim.detail["field"] == "Software" and prov.declared_synthetic


def test_exif_camera_and_ordinary_software_declare_nothing(tmp_path):
    data = exif_jpeg(make="Canon", model="Canon EOS R5", software="GIMP 2.10.36")
    prov = read_provenance(write(tmp_path, "cam.jpg", data), "image")
    camera = one(prov, source="exif", kind="camera")
    assert camera.value == "Canon EOS R5" and camera.declares is None
    assert one(prov, source="exif", kind="software").value == "GIMP 2.10.36"
    assert not prov.declared_synthetic and not prov.declared_capture


def test_a1111_parameters_in_a_jpeg_user_comment(tmp_path):
    exif = Image.Exif()
    text = "a cat\nSteps: 30, Sampler: DPM++ 2M, Seed: 3"
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + text.encode("utf-16-be")
    prov = read_provenance(write(tmp_path, "a.jpg", encode(small_image(), "JPEG", exif=exif)), "image")
    claim = one(prov, source="exif", kind="generator")
    assert claim.value == "Stable Diffusion WebUI" and claim.detail["field"] == "UserComment"


def test_a_jpeg_comment_naming_a_generator(tmp_path):
    data = encode(small_image(), "JPEG", comment=b"Generated with DALL-E 3")
    assert one(read_provenance(write(tmp_path, "d.jpg", data), "image"), source="comment").value == "DALL-E"


@pytest.mark.parametrize("text, name", [
    ("Midjourney Job ID: 123", "Midjourney"), ("Made with Google Imagen 3", "Imagen"),
    ("stable-diffusion-xl-base-1.0", "Stable Diffusion"), ("FLUX.1 [dev]", "FLUX"),
    ("Photo de vacances", None), ("imagen de la playa", None), ("a firefly at dusk", None),
    ("trained on ImageNet", None),
])
def test_known_generators_are_matched_as_words(text, name):
    assert vocab.known_generator(text) == name


# --- C2PA -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, mime", [("JPEG", "image/jpeg"), ("PNG", "image/png")])
def test_c2pa_signed_by_the_test_ca_is_verified_with_it_as_anchor(tmp_path, signer, anchor, fmt, mime):
    data = sign(encode(small_image(), fmt), mime, signer)
    prov = read_provenance(write(tmp_path, f"s.{fmt.lower()}", data), "image", trust_anchors=[anchor])
    manifest = one(prov, source="c2pa", kind="manifest")
    assert manifest.verified is True, manifest.detail
    assert manifest.value == "verity-tests 1.0"
    d = manifest.detail
    assert d["active"] and d["validation_state"] == "Trusted" and d["failures"] == []
    assert d["signer"]["common_name"] == "Verity Test Signer" and d["signer"]["issuer"] == "Verity Tests"
    assert d["signed_at"] is None  # no timestamp authority was used
    assert d["actions"] == [{"action": "c2pa.created", "digitalSourceType": TRAINED,
                             "softwareAgent": "Test Generator 1.0", "when": None}]
    assert d["ingredients"] == 0 and "not_verified" not in d
    dst = one(prov, source="c2pa", kind="digital_source_type")
    assert dst.value == TRAINED and dst.verified is True and dst.declares == "synthetic"
    assert prov.declared_synthetic and not prov.declared_capture
    assert prov.verified_claims == [manifest, dst]


def test_c2pa_without_anchors_or_with_another_ca_is_not_verified(tmp_path, signed_jpeg, other_anchor):
    path = write(tmp_path, "s.jpg", signed_jpeg)
    for anchors in (None, [other_anchor]):
        prov = read_provenance(path, "image", trust_anchors=anchors)
        manifest = one(prov, source="c2pa", kind="manifest")
        assert manifest.verified is False
        assert manifest.detail["not_verified"] == ["untrusted_signer"]
        assert manifest.detail["why"] == REASONS["untrusted_signer"]
        assert {"code": "signingCredential.untrusted", "explanation": "signing certificate untrusted"} \
            in manifest.detail["failures"]
        # An unverified claim still declares: the worker routes it to review.
        assert not one(prov, kind="digital_source_type").verified
        assert prov.declared_synthetic


def test_c2pa_pixels_changed_after_signing_is_tampered(tmp_path, signed_jpeg, anchor):
    data = bytearray(signed_jpeg)
    eoi = data.rindex(b"\xff\xd9")
    for i in range(eoi - 64, eoi - 32):  # entropy-coded data, well after the manifest
        data[i] ^= 0x5A
    prov = read_provenance(write(tmp_path, "t.jpg", bytes(data)), "image", trust_anchors=[anchor])
    manifest = one(prov, source="c2pa", kind="manifest")
    assert manifest.verified is False
    assert "tampered" in manifest.detail["not_verified"]
    assert any(f["code"] == "assertion.dataHash.mismatch" for f in manifest.detail["failures"])
    assert prov.declared_synthetic  # what it declares is still shown


def test_c2pa_camera_capture_manifest_is_declared_capture(tmp_path, signer, anchor):
    manifest = created_manifest(CAPTURE, generator="Test Camera Firmware", agent=None)
    data = sign(encode(small_image(), "JPEG"), "image/jpeg", signer, manifest)
    prov = read_provenance(write(tmp_path, "cam.jpg", data), "image", trust_anchors=[anchor])
    dst = one(prov, kind="digital_source_type")
    assert dst.value == CAPTURE and dst.verified and dst.declares == "capture"
    assert prov.declared_capture and not prov.declared_synthetic


def test_c2pa_edit_of_a_generated_image_reports_both_manifests(tmp_path, signer, signed_jpeg, anchor):
    edit = {"claim_generator_info": [{"name": "Adobe Firefly", "version": "2"}],
            "assertions": [{"label": "c2pa.actions", "data": {"actions": [
                {"action": "c2pa.opened", "parameters": {"ingredientIds": ["parent"]}},
                {"action": "c2pa.edited"}]}}]}
    data = sign(signed_jpeg, "image/jpeg", signer, edit, ingredient=(signed_jpeg, "image/jpeg"))
    prov = read_provenance(write(tmp_path, "e.jpg", data), "image", trust_anchors=[anchor])
    manifests = [c for c in prov.claims if c.kind == "manifest"]
    assert [m.detail["active"] for m in manifests] == [True, False]
    active, parent = manifests
    assert active.verified and active.detail["ingredients"] == 1
    assert not parent.verified and parent.detail["not_verified"] == ["not_active_manifest"]
    assert parent.detail["actions"][0]["digitalSourceType"] == TRAINED
    gen = one(prov, kind="generator")
    assert gen.value == "Adobe Firefly" and gen.verified and gen.detail["field"] == "claim_generator"
    assert prov.declared_synthetic


def test_c2pa_signed_mp4_is_verified(tmp_path, signer, anchor):
    video = write_video(tmp_path / "v.mp4", no_face_image((160, 120)), seconds=0.5)
    data = sign(video.read_bytes(), "video/mp4", signer)
    prov = read_provenance(write(tmp_path, "s.mp4", data), "video", trust_anchors=[anchor])
    assert one(prov, kind="manifest").verified and prov.declared_synthetic


def test_c2pa_remote_manifest_is_reported_and_never_fetched(tmp_path, signer, anchor):
    """The manifest lives at a URL (a server on loopback that counts requests): the claim
    names the URL, and nothing asks for it."""
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/manifest.c2pa"
        data = sign(encode(small_image(), "JPEG"), "image/jpeg", signer, remote_url=url)
        prov = read_provenance(write(tmp_path, "r.jpg", data), "image", trust_anchors=[anchor])
    finally:
        server.shutdown()
        server.server_close()
    claim = one(prov, kind="remote_manifest")
    assert claim.value == url and not claim.verified and claim.detail["not_verified"] == ["not_fetched"]
    assert hits == []


def _app11_segments(data: bytes) -> list[tuple[int, int]]:
    """(offset, total length) of each APP11 segment before the scan data."""
    out, pos = [], 2
    while data[pos] == 0xFF and data[pos + 1] not in (0xDA, 0xD9):
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if data[pos + 1] == 0xEB:
            out.append((pos, length + 2))
        pos += length + 2
    return out


def test_c2pa_garbage_or_truncated_app11_never_raises(tmp_path, signed_jpeg, anchor):
    (start, length), *_ = _app11_segments(signed_jpeg)
    garbage = bytearray(signed_jpeg)
    garbage[start + 12:start + length] = b"\x00\xff" * ((length - 12) // 2) + b"\x00" * ((length - 12) % 2)
    truncated = bytearray(signed_jpeg)  # the segment says 60 bytes and holds them, the rest cut
    truncated[start:start + length] = b"\xff\xeb" + struct.pack(">H", 60) + bytes(signed_jpeg[start + 4:start + 62])
    for name, data in (("garbage", garbage), ("truncated", truncated)):
        prov = read_provenance(write(tmp_path, f"{name}.jpg", bytes(data)), "image", trust_anchors=[anchor])
        manifests = [c for c in prov.claims if c.source == "c2pa"]
        assert manifests or prov.errors, name
        assert not any(c.verified for c in prov.claims), (name, prov.to_dict())
        assert manifests[0].detail["not_verified"] == ["unreadable"], (name, prov.to_dict())
        json.dumps(prov.to_dict())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_files_never_raise(tmp_path, signed_jpeg, anchor, data):
    """Random byte flips, insertions and truncations of a signed JPEG and of a PNG with text
    chunks and XMP: a Provenance every time, JSON-serialisable."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "Steps: 20, Sampler: Euler")
    info.add_itxt("XML:com.adobe.xmp", xmp_packet(TRAINED).decode(), zip=True)
    base = data.draw(st.sampled_from([signed_jpeg, encode(small_image(), "PNG", pnginfo=info)]))
    buf = bytearray(base)
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "insert", "truncate"]))
        i = data.draw(st.integers(0, len(buf) - 1))
        if op == "flip":
            buf[i] ^= data.draw(st.integers(1, 255))
        elif op == "insert":
            buf[i:i] = data.draw(st.binary(min_size=1, max_size=16))
        else:
            del buf[max(i, 1):]
    path = write(tmp_path, "m.bin", bytes(buf))
    prov = read_provenance(path, "image", trust_anchors=[anchor])
    json.dumps(prov.to_dict())


def test_store_json_of_unexpected_shape_is_handled():
    for store in ({}, {"manifests": []}, {"manifests": {"a": "b"}, "active_manifest": "a"},
                  {"manifests": {"a": {"assertions": "x", "signature_info": 3, "ingredients": {}}},
                   "active_manifest": "a", "validation_results": [], "validation_state": 1}):
        claims = store_claims(store, anchors_given=True)
        assert claims and not any(c.verified for c in claims)


@pytest.mark.parametrize("code, reason", [
    ("signingCredential.untrusted", "untrusted_signer"), ("signingCredential.expired", "invalid_certificate"),
    ("claimSignature.mismatch", "invalid_signature"), ("assertion.dataHash.mismatch", "tampered"),
    ("assertion.bmffHash.mismatch", "tampered"), ("assertion.hashedURI.mismatch", "tampered"),
    ("timeStamp.untrusted", "invalid_timestamp"), ("claim.missing", "malformed_manifest"),
    ("ingredient.manifest.mismatch", "ingredient_invalid"), ("general.error", "validation_failed"),
])
def test_failure_codes_map_to_reasons(code, reason):
    assert reason_for(code) == reason and reason in REASONS


# --- bounds and errors ----------------------------------------------------------------------

def test_files_over_the_cap_empty_or_missing_are_errors(tmp_path, signed_jpeg):
    path = write(tmp_path, "s.jpg", signed_jpeg)
    prov = read_provenance(path, "image", max_bytes=len(signed_jpeg) - 1)
    assert prov.claims == [] and prov.checked == [] and "over the cap" in prov.errors[0]
    assert read_provenance(write(tmp_path, "e.jpg", b""), "image").errors == ["file: empty"]
    assert read_provenance(tmp_path / "missing.jpg", "image").errors[0].startswith("file: cannot be read")
    assert read_provenance(write(tmp_path, "u.bin", b"hello world" * 10), "image").checked == []
    with pytest.raises(ValueError):
        read_provenance(path, "audio")


def test_an_unreadable_anchor_file_is_an_error_and_nothing_is_verified(tmp_path, signed_jpeg):
    bad = write(tmp_path, "bad.pem", b"not a certificate")
    prov = read_provenance(write(tmp_path, "s.jpg", signed_jpeg), "image", trust_anchors=[bad])
    assert any(e.startswith("trust anchors:") for e in prov.errors)
    assert not one(prov, kind="manifest").verified


def test_the_result_is_json_and_round_trips(tmp_path, signed_jpeg, anchor):
    prov = read_provenance(write(tmp_path, "s.jpg", signed_jpeg), "image", trust_anchors=[anchor])
    d = json.loads(json.dumps(prov.to_dict()))
    assert Provenance.from_dict(d) == prov
    assert set(d) == {"claims", "declared_synthetic", "declared_capture", "checked", "errors", "timings_ms"}


def test_a_large_jpeg_is_read_quickly_with_and_without_a_manifest(tmp_path, signer, anchor):
    """A 4000x3000 photo-sized JPEG: headers only without a manifest; with one, c2pa-rs hashes
    the whole file. Generous bounds (CI has 2 cores); the measured figures are in the report."""
    im = Image.fromarray(np.random.default_rng(3).integers(0, 255, (3000, 4000, 3), dtype=np.uint8))
    plain = encode(im, "JPEG", quality=85)
    signed = sign(plain, "image/jpeg", signer)
    times = {}
    for name, data in (("plain", plain), ("signed", signed)):
        path = write(tmp_path, f"{name}.jpg", data)
        read_provenance(path, "image", trust_anchors=[anchor])  # warm: c2pa's import, page cache
        t = time.perf_counter()
        prov = read_provenance(path, "image", trust_anchors=[anchor])
        times[name] = (time.perf_counter() - t) * 1000
        assert (name == "signed") == bool(prov.verified_claims)
    print(f"4000x3000 JPEG, {len(plain) / 1e6:.1f} MB: {times}")
    assert times["plain"] < 1000 and times["signed"] < 5000, times


def test_no_pixel_is_decoded_and_compressed_text_is_capped(tmp_path):
    """A PNG whose header declares 50,000 x 50,000 pixels is no bomb here (only chunk headers
    are read); a zTXt chunk inflating to 64 MB is skipped at the text cap."""
    prov = read_provenance(write(tmp_path, "bomb.png", png_bomb()), "image")
    assert prov.claims == [] and prov.errors == []
    data = encode(small_image(), "PNG")
    body = b"Comment\x00\x00" + zlib.compress(b"Midjourney " + b"\x00" * (64 << 20), 9)
    chunk = struct.pack(">I", len(body)) + b"zTXt" + body + struct.pack(">I", zlib.crc32(b"zTXt" + body))
    iend = data.rindex(b"IEND") - 4
    prov = read_provenance(write(tmp_path, "ztxt.png", data[:iend] + chunk + data[iend:]), "image")
    assert prov.claims == []
    assert prov.errors == [f"png zTXt 'Comment': over {containers.MAX_ITEM_BYTES:,} bytes decompressed: skipped"]
