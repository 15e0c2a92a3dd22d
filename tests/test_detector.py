"""The detector pipeline on real onnxruntime sessions, real face photos and media made here."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from mediagen import face_image, face_photo_paths, jpeg_bytes, no_face_image, png_bomb, png_bytes, write_video
from onnxgen import tiny_model
from PIL import Image

from detector import Label, media
from detector.aggregate import _logit, face_tracks, item_score, label_for, track_score, video_score
from detector.crops import crop_face, crop_transform
from detector.manifest import ManifestError, load_manifest
from detector.pipeline import Detector
from detector.result import DetectionResult, FaceEvidence, FrameEvidence
from detector.runtime import ProviderError, cuda_available, make_session, providers_for


@pytest.fixture(scope="module")
def detector():
    """The shipped model (models/verity-sbi), on the CPU, warmed up once for the module."""
    det = Detector(device="cpu")
    det.warmup()
    return det


# --- the shipped model on real faces ----------------------------------------------------------

def test_photo_with_a_face_is_scored_with_evidence(detector, tmp_path):
    path = tmp_path / "face.jpg"
    path.write_bytes(jpeg_bytes(face_image((1920, 1080), 600)))
    res = detector.analyze_path(path)
    assert res.label in (Label.LIKELY_AUTHENTIC, Label.SUSPECTED_FAKE)
    assert 0.0 <= res.score <= 1.0
    assert len(res.frames) == 1 and len(res.frames[0].faces) == 1
    face = res.frames[0].faces[0]
    x1, y1, x2, y2 = face.box
    # the face was pasted in the middle of the canvas, 600 px tall photo
    assert 700 < (x1 + x2) / 2 < 1220 and 300 < (y1 + y2) / 2 < 800
    assert face.detection_score > 0.9 and face.fake_score == pytest.approx(res.score, abs=1e-3)
    assert res.model_name == detector.model_name and res.provider == "CPUExecutionProvider"
    assert set(res.timings_ms) >= {"decode", "detect", "classify", "total"}
    # JSON round trip
    again = DetectionResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert again.score == res.score and again.frames[0].faces[0].box == face.box


def test_a_phone_sized_group_photo_has_its_small_faces_found_and_judged(detector, tmp_path):
    """Four 55-70 px faces in a 4000 x 2250 photo: shrunk to 640 px for detection they are 10 px
    and none is found; a photo is shrunk by at most 2x (up to 1280 px), so all four are judged."""
    canvas = Image.new("RGB", (4000, 2250), (96, 110, 120))
    for i, src in enumerate(face_photo_paths(4)):
        im = Image.open(src).convert("RGB")
        im = im.resize((round(im.width * 180 / im.height), 180), Image.BILINEAR)
        canvas.paste(im, (1400 + i * 300, 1035))
    assert len(detector.face_detector.detect(np.asarray(canvas))) <= 1  # the video-frame side, 640
    path = tmp_path / "group.jpg"
    path.write_bytes(jpeg_bytes(canvas))
    res = detector.analyze_path(path)
    faces = res.frames[0].faces
    assert len(faces) == 4 and all(f.fake_score is not None for f in faces)
    assert sorted(round((f.box[0] + f.box[2]) / 2 / 300) for f in faces) == [5, 6, 7, 8]  # one per photo
    assert res.label != Label.NO_FACE
    # Four real people do not get four chances at the threshold (model.json `picture`): the
    # picture's score is its highest face's, corrected for four faces.
    from detector.aggregate import picture_score

    assert detector.manifest.picture.aggregate == "count_adjusted"
    top = max(f.fake_score for f in faces)
    assert res.score == pytest.approx(picture_score(res.frames, detector.manifest.picture), abs=1e-4)
    assert res.score < top
    assert f"highest face score {top:.2f}, corrected for 4 faces in the image" in res.reasons


def test_a_very_large_photo_is_searched_in_tiles_and_each_face_found_once(detector):
    """Four 60 px faces in a 6000 x 3375 photo: the pass over the whole photo (shrunk 4.7x) finds
    none; the 2560 px tiles (shrunk 2x) find each of them once, the one a tile edge cuts too."""
    canvas = Image.new("RGB", (6000, 3375), (96, 110, 120))
    xs = [600, 2520, 4300, 5500]  # the second straddles the first tile's right edge (2560)
    for x, src in zip(xs, face_photo_paths(4)):
        im = Image.open(src).convert("RGB")
        canvas.paste(im.resize((round(im.width * 180 / im.height), 180), Image.BILINEAR), (x, 1600))
    rgb = np.asarray(canvas)
    fd = detector.face_detector
    assert fd.detect(rgb, fd.photo_side(*rgb.shape[:2])) == []
    faces = fd.detect_photo(rgb)
    assert sorted(int(f.box[0] // 100) for f in faces) == [6, 25, 43, 55]
    assert all(1600 < f.box[1] < f.box[3] < 1780 and 40 < f.width < 100 for f in faces)
    res = detector.analyze_image(rgb)
    assert len(res.frames[0].faces) == 4 and all(f.fake_score is not None for f in res.frames[0].faces)


def test_tiles_cover_a_large_photo_with_the_overlap_and_no_more_tiles_than_needed():
    from detector.faces import FaceDetector

    fd = FaceDetector(session=_NoSession())
    assert fd.tiles(2250, 2560) == [] and fd.tiles(1080, 1920) == []
    assert fd.tiles(2250, 4000) == [(0, 0, 2250, 2160), (0, 1840, 2250, 4000)]
    for h, w in ((3024, 4032), (3375, 6000), (5164, 7746), (2600, 12000)):
        tiles = fd.tiles(h, w)
        covered = np.zeros((h, w), bool)
        for y0, x0, y1, x1 in tiles:
            assert y1 - y0 <= 2560 and x1 - x0 <= 2560
            covered[y0:y1, x0:x1] = True
        assert covered.all()
        for axis, length in ((0, h), (1, w)):
            spans = sorted({(t[axis], t[axis + 2]) for t in tiles})
            assert len(spans) == max(1, math.ceil((length - fd.tile_overlap) / (2560 - fd.tile_overlap)))
            assert all(a[1] - b[0] >= fd.tile_overlap for a, b in itertools.pairwise(spans))


class _NoSession:
    def get_inputs(self):
        return [type("Input", (), {"name": "input"})()]


def test_detection_side_grows_for_large_photos_only(detector):
    side = detector.face_detector.photo_side
    assert side(360, 640) == side(720, 1280) == 640
    assert side(1080, 1920) == 960  # shrunk 2x: its 32 px faces are 16 px for RetinaFace
    assert side(1440, 2560) == side(2250, 4000) == side(6000, 8000) == 1280


def test_a_face_of_26_px_is_judged_not_skipped(detector):
    res = detector.analyze_image(np.asarray(face_image((320, 240), 70)))
    assert len(res.frames[0].faces) == 1 and 24 <= res.frames[0].faces[0].box[2] - res.frames[0].faces[0].box[0] < 40
    assert res.label != Label.NO_FACE and res.score is not None


def test_no_face_image_is_no_face_never_authentic(detector, tmp_path):
    path = tmp_path / "landscape.png"
    path.write_bytes(png_bytes(no_face_image()))
    res = detector.analyze_path(path)
    assert res.label == Label.NO_FACE
    assert res.score is None
    assert "no face" in res.reasons[0]


def test_video_samples_frames_evenly_and_scores_them(detector, tmp_path):
    path = write_video(tmp_path / "clip.mp4", face_image((640, 360), 300), seconds=4, fps=15)
    det = Detector(device="cpu", frames=8, manifest=detector.manifest, occlusion_check=False)
    res = det.analyze_path(path)
    assert res.label in (Label.LIKELY_AUTHENTIC, Label.SUSPECTED_FAKE)
    assert res.media.kind == "video" and res.media.codec == "h264"
    assert res.media.duration == pytest.approx(4.0, abs=0.2)
    stamps = [f.timestamp for f in res.frames]
    assert len(stamps) == 8 and stamps == sorted(stamps)
    # midpoints of 8 slices of 4 s: 0.25, 0.75, ... 3.75
    assert stamps[0] == pytest.approx(0.25, abs=0.1) and stamps[-1] == pytest.approx(3.75, abs=0.1)
    assert all(len(f.faces) == 1 for f in res.frames)


def test_rotation_metadata_is_honoured(tmp_path):
    path = write_video(tmp_path / "rot.mp4", face_image((320, 180), 150), seconds=1, fps=10, rotation=90)
    frames = list(media.sample_video(path, 2))
    # stored 320x180 landscape, displayed rotated a quarter turn: portrait frames
    assert frames[0].image.shape[:2] == (320, 180)


@pytest.mark.parametrize("name,data,reason", [
    ("zero.jpg", b"", "empty"),
    ("page.jpg", b"<html><script>alert(1)</script></html>", "unsupported_type"),
    ("bomb.png", png_bomb(), "too_many_pixels"),
])
def test_bad_files_are_unreadable_with_a_reason(detector, tmp_path, name, data, reason):
    path = tmp_path / name
    path.write_bytes(data)
    res = detector.analyze_path(path)
    assert res.label == Label.UNREADABLE and res.score is None
    assert res.reasons[0].startswith(reason)


def test_truncated_jpeg_and_mp4_are_unreadable(detector, tmp_path):
    jpg = jpeg_bytes(face_image((800, 600), 400))
    (tmp_path / "cut.jpg").write_bytes(jpg[: len(jpg) // 3])
    res = detector.analyze_path(tmp_path / "cut.jpg")
    assert res.label == Label.UNREADABLE and res.reasons[0].startswith("corrupt_image")
    clip = write_video(tmp_path / "full.mp4", face_image((320, 240), 200), seconds=1, fps=10).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(clip[:600])
    res = detector.analyze_path(tmp_path / "cut.mp4")
    assert res.label == Label.UNREADABLE and res.reasons[0].startswith("corrupt_video")


def test_exif_orientation_is_applied(tmp_path):
    im = face_image((600, 400), 300)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    path = tmp_path / "rotated.jpg"
    im.save(path, "JPEG", exif=exif)
    rgb, info = media.load_image(path)
    assert rgb.shape[:2] == (600, 400) and info.rotation == 270


def test_gif_first_frame_and_webp_are_read(tmp_path):
    frames = [no_face_image((120, 80)), face_image((120, 80), 60)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    rgb, info = media.load_image(tmp_path / "a.gif")
    assert info.format == "GIF" and rgb.shape == (80, 120, 3)
    frames[1].save(tmp_path / "b.webp", "WEBP")
    assert media.identify(tmp_path / "b.webp") == ("image", "image/webp")


# --- manifest, providers, calibration -------------------------------------------------------

def test_manifest_sha256_is_enforced(tmp_path):
    model = tiny_model(tmp_path, sha="0" * 64)
    with pytest.raises(ManifestError, match="sha256 mismatch"):
        load_manifest(model)
    with pytest.raises(ManifestError, match="sha256 mismatch"):
        Detector(model=model, device="cpu")


def test_manifest_errors_are_clear(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        load_manifest(tmp_path / "nope")
    (tmp_path / "model.json").write_text('{"name": "x"}')
    with pytest.raises(ManifestError, match="not a valid model manifest"):
        load_manifest(tmp_path)


def test_shipped_manifest_is_valid_and_matches_its_file():
    m = load_manifest("verity-sbi")
    assert m.input.size >= 64 and 0 < m.thresholds.review <= m.thresholds.block < 1
    assert m.training, "the shipped model must say how it was trained"
    assert (m.path / "MODEL_CARD.md").is_file()


def test_temperature_calibration_is_applied(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plain = Detector(model=tiny_model(tmp_path / "a"), device="cpu")
    hot = Detector(model=tiny_model(tmp_path / "b", calibration={"method": "temperature", "temperature": 4.0}),
                   device="cpu")
    crops = np.full((1, 32, 32, 3), 255, dtype=np.uint8)  # normalised mean ~ 2.2 -> logit 2.2
    p1, p4 = float(plain.classify(crops)[0]), float(hot.classify(crops)[0])
    logit = math.log(p1 / (1 - p1))
    assert p1 > 0.85
    assert p4 == pytest.approx(1 / (1 + math.exp(-logit / 4.0)), abs=1e-5)


def test_cpu_provider_is_explicit_and_read_back(tmp_path):
    model = tiny_model(tmp_path)
    assert providers_for("cpu") == ["CPUExecutionProvider"]
    _, provider = make_session(load_manifest(model).model_path, "cpu")
    assert provider == "CPUExecutionProvider"
    with pytest.raises(ValueError):
        providers_for("tpu")


@pytest.mark.skipif(cuda_available(), reason="this onnxruntime has the CUDA provider")
def test_cuda_demanded_without_cuda_fails_loudly(tmp_path):
    with pytest.raises(ProviderError, match="CUDA"):
        Detector(model=tiny_model(tmp_path), device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="no CUDAExecutionProvider in this onnxruntime (CPU install)")
def test_cuda_session_really_runs_on_cuda(tmp_path):
    det = Detector(device="cuda")
    assert det.provider == "CUDAExecutionProvider" and det.face_provider == "CUDAExecutionProvider"
    path = tmp_path / "face.jpg"
    path.write_bytes(jpeg_bytes(face_image((1280, 720), 400)))
    res = det.analyze_path(path)
    assert res.provider == "CUDAExecutionProvider" and res.score is not None


# --- pure parts -----------------------------------------------------------------------------

def _frame(i, *scores):
    return FrameEvidence(index=i, timestamp=i / 10, faces=[
        FaceEvidence(box=[0, 0, 1, 1], landmarks=[], detection_score=0.99, fake_score=s) for s in scores])


def test_item_score_is_mean_of_top_k_frame_maxima():
    frames = [_frame(0, 0.1, 0.9), _frame(1, 0.2), _frame(2), _frame(3, 0.5), _frame(4, 0.3)]
    assert item_score(frames, 2) == pytest.approx((0.9 + 0.5) / 2)
    assert item_score(frames, 10) == pytest.approx((0.9 + 0.5 + 0.3 + 0.2) / 4)
    assert item_score([_frame(0), _frame(1)], 4) is None


def _face_at(x, score):
    return FaceEvidence(box=[x, 100, x + 80, 180], landmarks=[], detection_score=0.99, fake_score=score)


def test_tracks_follow_each_person_across_frames():
    # two people side by side; the right one moves a little each frame; frame 2 lost the left one
    frames = [FrameEvidence(index=i, timestamp=i, faces=faces) for i, faces in enumerate([
        [_face_at(0, 0.2), _face_at(300, 0.9)],
        [_face_at(305, 0.8), _face_at(4, 0.3)],
        [_face_at(311, 0.7)],
        [_face_at(2, 0.1), _face_at(316, 0.95)],
    ])]
    tracks = sorted(face_tracks(frames), key=len)
    assert tracks == [[0.2, 0.3, 0.1], [0.9, 0.8, 0.7, 0.95]]


def test_track_score_outvotes_a_real_face_s_odd_frame_where_top_k_does_not():
    # a real talking head: one blurred frame scores high; a swap: high in every frame
    real = [FrameEvidence(index=i, timestamp=i, faces=[_face_at(i, s)])
            for i, s in enumerate([0.2, 0.25, 0.97, 0.3, 0.2, 0.9, 0.25, 0.3])]
    swap = [FrameEvidence(index=i, timestamp=i, faces=[_face_at(i, s)])
            for i, s in enumerate([0.7, 0.75, 0.8, 0.7, 0.72, 0.78, 0.74, 0.76])]
    assert item_score(real, 2) > item_score(swap, 2)      # top-k: the real one looks worse
    assert track_score(real) < 0.5 < track_score(swap)    # a track's mean: the swap does
    assert track_score(real, top_k=2) == pytest.approx(item_score(real, 2), abs=0.02)  # one person: as top-k
    # the video calibration shifts the mean logit: offset log(3) takes a 0.75 mean to 0.5
    steady = [FrameEvidence(index=i, timestamp=i, faces=[_face_at(0, 0.75)]) for i in range(4)]
    assert track_score(steady, offset=math.log(3)) == pytest.approx(0.5)
    assert track_score([FrameEvidence(index=0, timestamp=0)]) is None


def test_a_passer_by_does_not_decide_the_video():
    frames = [FrameEvidence(index=i, timestamp=i, faces=[_face_at(0, 0.1)]) for i in range(8)]
    frames[3].faces.append(_face_at(400, 0.99))  # a face seen once (a false detection, a passer-by)
    assert track_score(frames) < 0.2
    assert item_score(frames, 2) > 0.5


def test_video_score_follows_the_model_s_video_block():
    from detector.manifest import VideoSpec

    frames = [FrameEvidence(index=i, timestamp=i, faces=[_face_at(0, s)]) for i, s in enumerate([0.9, 0.1, 0.1])]
    assert video_score(frames, 1, None) == pytest.approx(0.9)
    assert video_score(frames, 1, VideoSpec()) == pytest.approx(0.9)
    assert video_score(frames, 1, VideoSpec(aggregate="track_mean")) == pytest.approx(track_score(frames))
    assert video_score(frames, 1, VideoSpec(aggregate="track_top_k")) == pytest.approx(0.9)
    # the calibration: the real-video offset lowers the video's score, never its rank
    assert video_score(frames, 1, VideoSpec(aggregate="track_top_k", offset=_logit(0.9))) == pytest.approx(0.5)


def _sized(width, score):
    return FaceEvidence(box=[0, 0, width, width], landmarks=[], detection_score=0.99, fake_score=score)


def _picture_spec(**kw):
    from detector.manifest import PictureSpec

    # real faces: 40 px ones sit at logit -2 (sd 0.5), 160 px ones at logit 0 (sd 1); reference: 0, 1
    spec = {"aggregate": "size_adjusted", "widths": [40, 160], "mean": [-2.0, 0.0], "std": [0.5, 1.0],
            "reference_mean": 0.0, "reference_std": 1.0}
    return PictureSpec.model_validate({**spec, **kw})


def test_picture_score_reads_each_face_against_real_faces_of_its_size():
    from detector.aggregate import picture_score
    from detector.manifest import PictureSpec

    spec = _picture_spec()
    one = [FrameEvidence(0, 0.0, [_sized(160, 0.8)])]
    assert picture_score(one, spec) == pytest.approx(0.8)          # a typical face keeps its score
    assert picture_score(one, PictureSpec()) == pytest.approx(0.8)  # max: as before
    assert picture_score([FrameEvidence(0, 0.0)], spec) is None
    # a 40 px face at logit -1 is two of its size's sds above them: as unusual as a 160 px face at +2
    small = picture_score([FrameEvidence(0, 0.0, [_sized(40, 1 / (1 + math.exp(1)))])], spec)
    assert small == pytest.approx(1 / (1 + math.exp(-2)))
    # beyond the knots the ends hold; between them, linear in log width
    assert picture_score([FrameEvidence(0, 0.0, [_sized(400, 0.8)])], spec) == pytest.approx(0.8)
    assert picture_score([FrameEvidence(0, 0.0, [_sized(20, 1 / (1 + math.exp(2)))])], spec) == pytest.approx(0.5)
    # a 80 px face: mean -1, sd 0.75 (half way in log width)
    assert picture_score([FrameEvidence(0, 0.0, [_sized(80, 0.5)])], spec) == pytest.approx(
        1 / (1 + math.exp(-1 / 0.75)))


def test_four_real_faces_do_not_get_four_chances_to_cross_the_threshold():
    from statistics import NormalDist

    from detector.aggregate import picture_score
    from detector.manifest import PictureSpec

    spec = _picture_spec()
    faces = [_sized(160, s) for s in (0.9, 0.5, 0.4, 0.3)]
    adjusted = picture_score([FrameEvidence(0, 0.0, faces)], spec)
    assert picture_score([FrameEvidence(0, 0.0, faces)], PictureSpec()) == pytest.approx(0.9)
    # the highest of four real faces beyond z has probability 1 - (1 - tail)^4
    z = _logit(0.9)
    tail = 1 - (1 - (1 - NormalDist().cdf(z))) ** 4
    assert adjusted == pytest.approx(1 / (1 + math.exp(NormalDist().inv_cdf(tail))), abs=1e-6)
    assert adjusted < 0.9
    # ranks within a picture are kept: a higher top face gives a higher picture score
    higher = picture_score([FrameEvidence(0, 0.0, [_sized(160, 0.95), *faces[1:]])], spec)
    assert higher > adjusted
    # an extreme face stays extreme (no overflow, no 1.0 from rounding a tail to zero)
    assert 0.999 < picture_score([FrameEvidence(0, 0.0, [_sized(160, 1 - 1e-6), *faces[1:]])], spec) < 1.0


def test_a_picture_spec_that_cannot_be_read_is_refused():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="same non-zero length"):
        _picture_spec(std=[1.0])
    with pytest.raises(ValidationError, match="ascending"):
        _picture_spec(widths=[160, 40])
    with pytest.raises(ValidationError, match="positive"):
        _picture_spec(std=[0.0, 1.0])


def test_labels_and_reasons():
    label, reasons = label_for(None, 0.5, [_frame(0)], "image")
    assert label == Label.NO_FACE
    label, reasons = label_for(0.7, 0.5, [_frame(0, 0.7)], "image")
    assert label == Label.SUSPECTED_FAKE and "0.70" in reasons[0]
    label, _ = label_for(0.2, 0.5, [_frame(0, 0.2)], "image")
    assert label == Label.LIKELY_AUTHENTIC
    frames = [FrameEvidence(0, 0.0, [_sized(60, 0.45), _sized(120, 0.3)])]
    label, reasons = label_for(0.62, 0.5, frames, "image", picture_aggregate="size_adjusted")
    assert label == Label.SUSPECTED_FAKE
    assert reasons[1] == ("highest face score 0.45, read against real faces of its size and corrected for 2 faces "
                          "in the image")


def test_crop_is_square_around_the_box_and_aligns_eyes():
    img = np.zeros((200, 200, 3), np.uint8)
    img[90:110, 50:150] = 255  # a bright bar
    crop = crop_face(img, [50, 50, 150, 150], None, 100, margin=1.0)
    assert crop.shape == (100, 100, 3) and crop[50, 50].tolist() == [255, 255, 255]
    # eyes on a 45 degree line: aligning rotates the bar off the horizontal
    tilted = crop_face(img, [50, 50, 150, 150], np.array([[60, 60], [140, 140]]), 100, 1.0, align=True)
    assert tilted[50, 50].tolist() == [255, 255, 255] and tilted[50, 5].tolist() != [255, 255, 255]


def test_one_frame_video_is_analysed_not_unreadable(tmp_path):
    path = write_video(tmp_path / "one.mp4", face_image((320, 240), 160), seconds=1 / 15, fps=15)
    frames = list(media.sample_video(path, 32))
    assert len(frames) == 1 and frames[0].image.shape == (240, 320, 3)


def _pillow_crop(img: np.ndarray, box, lms, size: int, margin: float, align: bool) -> np.ndarray:
    """The crops 2.0.0 (member 1 of the shipped 3.0.0) was trained with: Pillow's reduce by the whole factor
    and its bilinear affine transform, on the whole frame."""
    cx, cy, side, angle = crop_transform(box, lms, margin, align)
    k = side / size
    r = int(k) if align and k >= 2.0 else 1
    pil = Image.fromarray(img)
    if r > 1:
        pil, cx, cy, k = pil.reduce(r), cx / r, cy / r, k / r
    a, b, d, e = math.cos(angle) * k, -math.sin(angle) * k, math.sin(angle) * k, math.cos(angle) * k
    c, f = cx - (a + b) * size / 2, cy - (d + e) * size / 2
    return np.asarray(pil.transform((size, size), Image.AFFINE, (a, b, c, d, e, f), resample=Image.BILINEAR))


def test_crops_match_the_pillow_crops_the_model_was_trained_with():
    """crop_face warps with OpenCV (10x faster than Pillow's affine transform) but must give the
    crops the model learned from: same pixel centres, same black outside the frame, same
    truncation. Faces anywhere in the frame, partly outside it, tilted, shrunk up to 8x."""
    photo = np.asarray(face_image((1350, 1350), 1100))
    rng = np.random.default_rng(7)
    for _ in range(150):
        x, y, bw = rng.uniform(-200, 1300), rng.uniform(-200, 1300), rng.uniform(20, 900)
        box = np.array([x, y, x + bw, y + bw * rng.uniform(0.8, 1.3)], np.float32)
        lms = np.array([[x + bw * 0.3, y + bw * 0.4], [x + bw * 0.7, y + bw * 0.4 + rng.uniform(-0.3, 0.3) * bw],
                        [0, 0], [0, 0], [0, 0]], np.float32)
        align, margin, size = bool(rng.integers(0, 2)), float(rng.uniform(1.0, 2.0)), int(rng.choice([160, 224]))
        if not align and max(box[2] - box[0], box[3] - box[1]) * margin / size > 2.0:
            continue  # that path is Pillow's own crop-and-resize
        ours = crop_face(photo, box, lms, size, margin, align).astype(int)
        diff = np.abs(ours - _pillow_crop(photo, box, lms, size, margin, align))
        # OpenCV reads the source at 1/32 px and its box filter rounds a little differently.
        assert diff.max() <= 1 and diff.mean() < 0.1, (box, align, margin, size)
    # The same crop from a PIL image as from its array (training passes both).
    box, lms = [500, 400, 900, 900], np.array([[600, 600], [800, 620], [0, 0], [0, 0], [0, 0]], np.float32)
    assert np.array_equal(crop_face(Image.fromarray(photo), box, lms, 224, 1.3, True),
                          crop_face(photo, box, lms, 224, 1.3, True))


def test_an_aligned_crop_that_shrinks_a_lot_is_filtered_not_aliased():
    """1-px stripes shrunk 5x must come out flat grey (box filter), not as aliased stripes: the
    model learns from crops shrunk at most ~2x, so a 700 px studio face must not alias."""
    img = np.zeros((1200, 1200, 3), dtype=np.uint8)
    img[:, ::2] = 255
    box, lms = [300, 300, 900, 900], np.array([[450, 500], [750, 505], [0, 0], [0, 0], [0, 0]], np.float32)
    crop = crop_face(img, box, lms, 160, margin=1.3, align=True)
    assert crop.std() < 12 and abs(float(crop.mean()) - 127.5) < 10
    # ... and a crop that barely shrinks keeps the detail it has (no blur for nothing).
    small = img[:300, :300]
    crop = crop_face(small, [100, 100, 200, 200], lms / 5, 160, margin=1.3, align=True)
    assert crop.std() > 40


def test_face_boxes_from_a_subsampled_frame_agree_with_a_filtered_downscale(detector):
    """prepare() reads every k-th pixel of a big frame (fast) instead of box-filtering it; the
    faces it finds must be where a filtered downscale finds them, landmarks included."""
    fd = detector.face_detector
    for size, face_h in (((1920, 1080), 600), ((3840, 2160), 900), ((1500, 1100), 500)):
        im = face_image(size, face_h)
        fast = fd.detect(np.asarray(im))
        k = max(size) / fd.max_side
        ref_im = im.resize((round(size[0] / k), round(size[1] / k)), Image.BOX)
        ref = fd.detect(np.asarray(ref_im))
        assert len(fast) == len(ref) == 1, size
        a, b = fast[0].box, ref[0].box * np.array([size[0] / ref_im.width, size[1] / ref_im.height] * 2)
        inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        assert inter / union > 0.93, size
        lm_ref = ref[0].landmarks * np.array([size[0] / ref_im.width, size[1] / ref_im.height])
        assert np.abs(fast[0].landmarks - lm_ref).max() < 0.04 * fast[0].width, size


def test_onnxruntime_threads_sleep_unless_spinning_is_asked_for(tmp_path):
    """VERITY_ORT_SPIN (default off), parsed once into Settings, reaches the session's options as
    the worker passes it down; a bad value is an error naming the variable."""
    from core.settings import SettingsError, load_settings

    model = Path(tiny_model(tmp_path)) / "model.onnx"
    off = load_settings(env={}, data_dir=tmp_path, make_secret=False)
    session, _ = make_session(model, "cpu", spin=off.ort_spin)
    assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    on = load_settings(env={"VERITY_ORT_SPIN": "1"}, data_dir=tmp_path, make_secret=False)
    session, _ = make_session(model, "cpu", spin=on.ort_spin)
    try:
        entry = session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    except Exception:  # noqa: BLE001 - onnxruntime raises when the entry was never set
        entry = None
    assert entry in (None, "", "1")
    with pytest.raises(SettingsError, match="VERITY_ORT_SPIN"):
        load_settings(env={"VERITY_ORT_SPIN": "fast"}, data_dir=tmp_path, make_secret=False)


def test_hflip_tta_averages_the_logits_of_a_crop_and_its_mirror(tmp_path):
    """tta.hflip in model.json: the classifier scores each crop and its mirror image in one run
    and calibrates the mean of the two logits (what training/export.py fitted)."""
    import shutil

    shipped = load_manifest("verity-sbi")
    model = tmp_path / "flip"
    model.mkdir()
    shutil.copyfile(shipped.model_path, model / "model.onnx")
    doc = json.loads((shipped.path / "model.json").read_text())
    doc["tta"] = {"hflip": True}
    (model / "model.json").write_text(json.dumps(doc))
    flip = Detector(model=str(model), device="cpu").classifier
    doc["tta"] = {"hflip": False}
    (model / "model.json").write_text(json.dumps(doc))
    det = Detector(model=str(model), device="cpu")
    plain = det.classifier

    size = shipped.input.size
    crops = []
    for i in range(2):
        img = np.asarray(face_image((640, 480), 400, index=i))
        face = det.face_detector.detect(img)[0]
        crops.append(crop_face(img, face.box, face.landmarks, size, shipped.crop.margin, shipped.crop.align))
    crops.append(np.random.default_rng(7).integers(0, 256, (size, size, 3), dtype=np.uint8))
    crops = np.stack(crops)
    z = plain.raw(plain.preprocess(crops)).reshape(-1).astype(np.float64)
    zm = plain.raw(plain.preprocess(np.ascontiguousarray(crops[:, :, ::-1]))).reshape(-1).astype(np.float64)
    t = shipped.calibration.temperature
    expected = 1 / (1 + np.exp(-((z + zm) / 2) / t))
    got = flip(crops)
    assert got == pytest.approx(expected, abs=1e-5)
    assert plain(crops) == pytest.approx(1 / (1 + np.exp(-z / t)), abs=1e-5)
    assert np.max(np.abs(got - plain(crops))) > 1e-4, "the mirror image must change the score"
    assert flip.inputs(crops).shape[0] == 2 * len(crops)


def _copy_of_shipped(tmp_path, name: str, **changes):
    import shutil

    shipped = load_manifest("verity-sbi-research")
    model = tmp_path / name
    model.mkdir()
    shutil.copyfile(shipped.model_path, model / "model.onnx")
    doc = json.loads((shipped.path / "model.json").read_text())
    doc.update(changes)
    (model / "model.json").write_text(json.dumps(doc))
    return model, doc


def test_tta_margins_average_the_logits_of_a_face_cropped_at_each_margin(tmp_path):
    """tta.margins in model.json: each face is also cropped at each further margin, and its score
    is the calibration of the mean raw output of all its crops and their mirror images."""
    one, doc = _copy_of_shipped(tmp_path, "one", tta={"hflip": True})
    two, _ = _copy_of_shipped(tmp_path, "two", tta={"hflip": True, "margins": [1.15]})
    plain, both = Detector(model=str(one), device="cpu"), Detector(model=str(two), device="cpu")
    assert both.manifest.crop_margins == (doc["crop"]["margin"], 1.15)

    img = np.asarray(face_image((800, 600), 260, index=3))
    face = plain.face_detector.detect_photo(img)[0]
    size, align, t = doc["input"]["size"], doc["crop"]["align"], doc["calibration"]["temperature"]
    z = []
    for m in (doc["crop"]["margin"], 1.15):
        crop = crop_face(img, face.box, face.landmarks, size, m, align)[None]
        x = plain.classifier.raw(plain.classifier.preprocess(crop, mirrored=True)).reshape(-1).astype(np.float64)
        z.append(x.mean())  # the crop and its mirror
    got = both.analyze_image(img).frames[0].faces[0].fake_score
    assert got == pytest.approx(1 / (1 + np.exp(-np.mean(z) / t)), abs=1e-4)
    one_margin = plain.analyze_image(img).frames[0].faces[0].fake_score
    assert one_margin == pytest.approx(1 / (1 + np.exp(-z[0] / t)), abs=1e-4)
    assert abs(got - one_margin) > 1e-3, "the second crop must change the score"


def test_tta_video_gives_video_frames_their_own_views_and_leaves_photos_as_they_are(tmp_path):
    """tta.video in model.json: the faces of a video's frames (a file or a live segment) are
    classified with its views (here one crop, no mirror: a quarter of the classifier's batch),
    while a photo keeps tta.hflip and tta.margins. Without it a video frame gets a photo's views."""
    photo_views = {"hflip": True, "margins": [1.15]}
    four, _ = _copy_of_shipped(tmp_path, "four", tta=photo_views)
    fast, _ = _copy_of_shipped(tmp_path, "fast", tta={**photo_views, "video": {"hflip": False, "margins": []}})
    one, _ = _copy_of_shipped(tmp_path, "one", tta={"hflip": False})
    dets = {name: Detector(model=str(m), device="cpu", frames=4) for name, m in
            (("four", four), ("fast", fast), ("one", one))}
    assert dets["fast"].manifest.video_crop_margins == (dets["fast"].manifest.crop.margin,)
    assert not dets["fast"].manifest.video_hflip and dets["four"].manifest.video_hflip
    batches: dict[str, list[int]] = {name: [] for name in dets}
    for name, det in dets.items():
        raw = det.classifier.raw
        det.classifier.raw = lambda x, raw=raw, name=name: batches[name].append(len(x)) or raw(x)
    clip = write_video(tmp_path / "clip.mp4", face_image((640, 360), 200), seconds=1, fps=8)
    videos = {name: det.analyze_path(clip) for name, det in dets.items()}

    def frame_scores(res):
        return [f.fake_score for fr in res.frames for f in fr.faces if f.fake_score is not None]

    faces = len(frame_scores(videos["one"]))
    assert faces >= 4
    assert batches["four"] == [4 * faces] and batches["fast"] == [faces] and batches["one"] == [faces]
    assert frame_scores(videos["fast"]) == pytest.approx(frame_scores(videos["one"]), abs=1e-6)
    assert max(abs(a - b) for a, b in zip(frame_scores(videos["fast"]), frame_scores(videos["four"]))) > 1e-3
    # a live segment is a video too
    rgb = np.asarray(face_image((640, 360), 200))
    live = dets["fast"].analyze_frames([(0.0, rgb), (0.5, rgb)])
    assert frame_scores(live) == pytest.approx(frame_scores(dets["one"].analyze_frames([(0.0, rgb), (0.5, rgb)])),
                                               abs=1e-6)
    # a photo keeps the photo's four views
    img = np.asarray(face_image((800, 600), 260, index=3))
    assert (dets["fast"].analyze_image(img).frames[0].faces[0].fake_score
            == pytest.approx(dets["four"].analyze_image(img).frames[0].faces[0].fake_score, abs=1e-6))
    assert batches["fast"][-1] == 4 and batches["four"][-1] == 4


@pytest.mark.parametrize("margins,why", [([0.9], r"\[1.0, 3.0\]"), ([1.15, 1.15], "repeat")])
def test_tta_margins_out_of_range_or_repeated_are_refused(tmp_path, margins, why):
    model, _ = _copy_of_shipped(tmp_path, "bad", tta={"hflip": True, "margins": margins})
    with pytest.raises(ManifestError, match=why):
        load_manifest(str(model))
    video, _ = _copy_of_shipped(tmp_path, "badvideo", tta={"hflip": True, "video": {"margins": margins}})
    with pytest.raises(ManifestError, match="tta.video.margins"):
        load_manifest(str(video))


@pytest.mark.parametrize("color,layout", [("RGB", "NCHW"), ("BGR", "NCHW"), ("RGB", "NHWC"), ("BGR", "NHWC")])
@pytest.mark.parametrize("mirrored", [False, True])
def test_classifier_input_is_the_manifest_normalisation_in_its_layout(tmp_path, color, layout, mirrored):
    """What the classifier is fed equals (pixel / scale - mean) / std, channels in the model's
    order and layout, crops first and their mirror images after."""
    import shutil

    from detector.classifier import Classifier

    shipped = load_manifest("verity-sbi")
    model = tmp_path / "m"
    model.mkdir()
    shutil.copyfile(shipped.model_path, model / "model.onnx")
    doc = json.loads((shipped.path / "model.json").read_text())
    doc["input"] = {**doc["input"], "color": color, "layout": layout, "scale": 255.0,
                    "mean": [0.1, 0.5, 0.9], "std": [0.2, 0.3, 0.4]}
    (model / "model.json").write_text(json.dumps(doc))
    clf = Classifier(load_manifest(str(model)), device="cpu")
    crops = np.random.default_rng(3).integers(0, 256, (3, 16, 20, 3), dtype=np.uint8)
    got = clf.preprocess(crops, mirrored=mirrored)

    src = np.concatenate([crops, crops[:, :, ::-1]]) if mirrored else crops
    want = (src.astype(np.float64) / 255.0 - np.array([0.1, 0.5, 0.9])) / np.array([0.2, 0.3, 0.4])
    if color == "BGR":
        want = want[..., ::-1]  # mean/std are given for R, G, B; the model's channel 0 is blue
    if layout == "NCHW":
        want = want.transpose(0, 3, 1, 2)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_short_video_is_sampled_densely_for_the_occlusion_check_and_classified_as_before(detector, tmp_path):
    """At 8 frames a second or more (a hand passes in about a second); the classifier still
    scores at most `frames` of them, spread evenly."""
    path = write_video(tmp_path / "clip.mp4", face_image((640, 360), 300), seconds=4, fps=15)
    det = Detector(device="cpu", frames=8, manifest=detector.manifest)
    res = det.analyze_path(path)
    assert len(res.frames) >= 30 and all(f.faces for f in res.frames)
    scored = [f.timestamp for f in res.frames if f.max_score is not None]
    assert len(scored) == 8 and scored[0] < 0.5 and scored[-1] > 3.5
    assert res.occlusion["checked"] and res.occlusion["events"] == [] and res.score == res.classifier_score
    assert res.timings_ms["occlusion"] < res.timings_ms["detect"]
