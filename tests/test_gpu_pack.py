"""training/gpu_pack.py (the pack a GPU machine trains from) and training/gpu_train.py.

The pack's format, its geometry and its Pillow crop stand-in need numpy and Pillow only: those
tests run in the runtime venv. The end-to-end one (pack, two training steps on the CPU, the
workstation's export of the checkpoint) needs the [train] extra and is skipped without it; run it
in the training venv (`.venv-train/bin/python -m pytest tests/test_gpu_pack.py`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mediagen import face_photo_paths
from PIL import Image

from detector.crops import crop_face
from detector.manifest import load_manifest
from training import data as D
from training import gpu_pack as P

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def face_detector():
    from detector.faces import FaceDetector, retinaface_onnx_bytes
    from detector.runtime import make_session

    return FaceDetector(make_session(retinaface_onnx_bytes(), "cpu", threads=2)[0])


@pytest.fixture(scope="module")
def records(face_detector) -> list[D.FaceRecord]:
    """Cached faces as training.data makes them: five London people at full detail, and one photo
    shrunk so far that its face is smaller than the cache (native < 1)."""
    out = []
    for n, path in enumerate(face_photo_paths(6)):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        if n == 5:
            rgb = np.asarray(Image.fromarray(rgb).resize((rgb.shape[1] // 8, rgb.shape[0] // 8), Image.LANCZOS))
        f = max(face_detector.detect(rgb), key=lambda f: f.width * f.height)
        crop, box, lms, native = D.cache_crop(rgb, f.box, f.landmarks)
        out.append(D.FaceRecord(crop, box, lms, f"faces-london/{path.stem[:3]}", f"faces-london/{path.name}", -1,
                                native))
    assert out[-1].native < 0.95 and all(r.native >= 0.95 for r in out[:-1])
    return out


def _round_trip(rec: D.FaceRecord, side: int, quality: int) -> P.PackedFace:
    data, n, x0, y0 = P.pack_face(rec, side, quality, 1.3, True)
    return P.PackedFace(P.unpack_canvas(np.frombuffer(data, np.uint8), n, x0, y0), rec.image.shape[0], rec.box,
                        rec.landmarks, rec.identity, rec.source, rec.frame, rec.face)


def _extreme_boxes(box: np.ndarray) -> list[np.ndarray]:
    """The box and the farthest views.jitter_box can move it: grown by the jitter on every side,
    and shifted by it towards each corner."""
    s = max(box[2] - box[0], box[3] - box[1]) * P.JITTER
    out = [box, box + np.array([-s, -s, s, s])]
    out += [box + np.array([dx, dy, dx, dy]) * s + np.array([-s, -s, s, s]) for dx in (-1, 1) for dy in (-1, 1)]
    return [b.astype(np.float32) for b in out]


def test_the_pillow_stand_in_crops_as_the_runtime_does(records):
    """Where OpenCV is missing (a bare GPU machine) training crops with Pillow: the same crops
    within one grey level, aligned or not, shrunk or enlarged."""
    assert P.ensure_crop_backend() == "opencv"  # here OpenCV loads: nothing is replaced
    rng = np.random.default_rng(3)
    for rec in records:
        img = rec.image
        for _ in range(8):
            box = rec.box + rng.uniform(-20, 20, 4).astype(np.float32)
            lms = rec.landmarks + rng.uniform(-8, 8, (5, 2)).astype(np.float32)
            size, align = int(rng.choice([64, 160, 288])), bool(rng.integers(0, 2))
            ours = P.pillow_crop_face(img, box, lms, size, 1.3, align).astype(int)
            diff = np.abs(ours - crop_face(img, box, lms, size, 1.3, align))
            assert diff.max() <= 1 and diff.mean() < 0.15, (size, align)


def test_a_packed_face_gives_back_its_geometry_and_the_crops_training_reads(records):
    for rec in records:
        packed = _round_trip(rec, 384, 95)
        img, box, lms = rec.native_view()
        pimg, pbox, plms = packed.native_view()
        # the same geometry: the same side, box and landmarks as the cached face, native detail kept
        assert pimg.shape == img.shape and packed.image.shape == rec.image.shape
        np.testing.assert_allclose(pbox, box, atol=1e-3)
        np.testing.assert_allclose(plms, lms, atol=1e-3)
        assert packed.native == pytest.approx(img.shape[0] / rec.image.shape[0])
        # every classifier crop training can take, the box jittered to its extremes, reads stored
        # pixels only (the corners would show the repeated edge otherwise): JPEG differences alone
        for b in _extreme_boxes(box):
            want = crop_face(img, b, lms, 224, 1.3, True).astype(int)
            got = crop_face(pimg, b, plms, 224, 1.3, True).astype(int)
            diff = np.abs(got - want)
            assert diff.mean() < 2.5 and np.percentile(diff, 99.5) < 10, (rec.source, diff.mean())


def test_a_face_packed_smaller_keeps_its_place_at_the_lower_detail(records):
    rec = records[0]
    packed = _round_trip(rec, 256, 90)
    pimg, pbox, plms = packed.native_view()
    k = 256 / rec.image.shape[0]
    assert pimg.shape == (256, 256, 3) and packed.image.shape == rec.image.shape
    np.testing.assert_allclose(pbox, rec.box * k, atol=1e-3)
    np.testing.assert_allclose(plms, rec.landmarks * k, atol=1e-3)
    small = np.asarray(Image.fromarray(rec.image).resize((256, 256), Image.LANCZOS))
    diff = np.abs(crop_face(pimg, pbox, plms, 160, 1.3, True).astype(int)
                  - crop_face(small, pbox, plms, 160, 1.3, True))
    assert diff.mean() < 3
    # and training's own views work on it
    from training.views import make_view

    for fake in (False, True):
        crop = make_view(packed, np.random.default_rng(1), fake, 96, 1.3, True, True)
        assert crop.shape == (96, 96, 3) and crop.dtype == np.uint8


def test_the_eval_region_holds_the_runtime_crop_at_any_size(records, face_detector):
    rgb = np.asarray(Image.open(face_photo_paths(1)[0]).convert("RGB").resize((600, 800)))
    face = max(face_detector.detect(rgb), key=lambda f: f.width * f.height)
    region, box, lms = P.eval_region(rgb, face, 1.3, True, max_crop=4000)
    assert region.shape[0] < rgb.shape[0] and region.shape[1] < rgb.shape[1]
    for size in (96, 224, 288):  # native resolution: the very crop the runtime takes
        np.testing.assert_array_equal(crop_face(region, box, lms, size, 1.3, True),
                                      crop_face(rgb, face.box, face.landmarks, size, 1.3, True))
    region, box, lms = P.eval_region(rgb, face, 1.3, True, max_crop=160)  # a large face, stored shrunk
    assert max(region.shape[:2]) < 260
    diff = np.abs(crop_face(region, box, lms, 160, 1.3, True).astype(int)
                  - crop_face(rgb, face.box, face.landmarks, 160, 1.3, True))
    assert diff.mean() < 4


def test_the_pack_fits_its_budget_or_says_why_not(records, tmp_path):
    parts = {"train": records[:4], "val": records[4:]}
    noise = np.random.default_rng(0).normal(0, 1, (256, 1024)).astype(np.float16)  # 0.5 MiB, incompressible
    weights = {"imagenet/conv.weight": noise}
    meta = {"pack_version": P.PACK_VERSION, "config": {"cache_size": D.CACHE_SIZE}, "backbone": "effnet-lite0",
            "weights": {"imagenet": {}}}
    out = tmp_path / "pack.npz"
    summary = P.write_pack(out, meta, parts, weights, None, 1.5, 1.3, True)
    assert out.stat().st_size <= 1.5 * P.MIB and summary["side"] == 384  # six faces fit at full detail
    pack = P.load_pack(out)
    train, val = pack.records("train"), pack.records("val")
    assert [r.source for r in train] == [r.source for r in records[:4]] and len(val) == 2
    assert [r.identity for r in val] == [r.identity for r in records[4:]]
    np.testing.assert_allclose(val[-1].native_view()[1], records[-1].native_view()[1], atol=1e-3)
    assert pack.weights("imagenet")["conv.weight"].dtype == np.float32 and pack.weights("init") == {}
    # forced lower: the faces shrink to fit
    small = P.write_pack(out, meta, parts, weights, None, 0.62, 1.3, True)
    assert small["side"] < 384 and out.stat().st_size <= 0.62 * P.MIB
    with pytest.raises(SystemExit, match=r"cannot fit --max-mib 0.5: weights 0.5 MiB"):
        P.write_pack(out, meta, parts, weights, None, 0.5, 1.3, True)


# --- end to end: pack, train on the CPU, export on the workstation ------------------------------

def _eval_folder(root: Path, face_detector) -> Path:
    """A training.shift_eval-like folder: two people of a held-out source, real and SBI."""
    from training import sbi

    rows = []
    for n, path in enumerate(face_photo_paths(8)[6:8]):
        rgb = np.asarray(Image.open(path).convert("RGB").resize((360, 480)))
        f = max(face_detector.detect(rgb), key=lambda f: f.width * f.height)
        fake = sbi.self_blend(rgb, f.box, f.landmarks, np.random.default_rng(n))[0]
        for family, img in (("real", rgb), ("sbi", fake)):
            rel = f"faces-lfw/single/{family}/p{n}.jpg"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / rel, quality=95)
            rows.append({"path": rel, "label": int(family != "real"), "source": "faces-lfw", "family": family,
                         "layout": "single", "unit": f"faces-lfw/p{n}"})
    (root / "items.json").write_text(json.dumps({"items": rows}))
    return root


@pytest.mark.train
def test_a_pack_trains_two_steps_on_the_cpu_into_a_checkpoint_the_export_reads(tmp_path, face_detector):
    pytest.importorskip("torch", reason="the [train] extra is not installed (torch): training tests skipped")
    pytest.importorskip("timm", reason="the [train] extra is not installed (timm): training tests skipped")
    from training import export
    from training import gpu_train as G

    corpus = tmp_path / "faces-london"
    corpus.mkdir()
    for path in face_photo_paths(12):
        im = Image.open(path).convert("RGB")
        im.thumbnail((480, 480))
        im.save(corpus / path.name, quality=92)
    run = tmp_path / "runs" / "research"
    run.mkdir(parents=True)
    cfg = {"real": [str(corpus)], "id_rule": "auto", "video_frames": 4, "exclude": None, "faces_per_image": 1,
           "cache": str(tmp_path / "cache"), "cache_size": D.CACHE_SIZE, "splits": str(tmp_path / "splits.json"),
           "seed": 0, "val_frac": 0.35, "test_frac": 0.1, "backbone": "effnet-lite0", "size": 64, "margin": 1.3,
           "align": True, "drop_rate": 0.2, "p_bi": 0.3, "epochs": 1, "batch": 8, "lr": 4e-4, "command": "test",
           "init_onnx": None}
    (run / "config.json").write_text(json.dumps(cfg))
    pack = tmp_path / "pack.npz"
    assert P.main(["--run", str(run), "--out", str(pack), "--max-mib", "10",
                   "--eval-dir", str(_eval_folder(tmp_path / "shift", face_detector))]) == 0
    assert pack.stat().st_size <= 10 * P.MIB
    meta = P.load_pack(pack).meta
    assert meta["faces"]["train"] > 0 and meta["faces"]["val"] > 0 and len(meta["eval_pictures"]) == 8
    # the shipped model, scored here on the packed eval faces the runtime's way, for the device's table
    assert [len(b["scores"]) for b in meta["eval_baselines"]] == [int(np.sum([p["faces"] for p in meta["eval_pictures"]]))]
    # ... with all its crops (crop.margin and tta.margins), and the device crops the trained network alike
    shipped = load_manifest(str(P.SHIPPED)).crop_margins
    assert meta["eval_baselines"][0]["margins"] == list(shipped) == meta["eval"]["margins"] and len(shipped) > 1

    # the device's validation sets, made in parallel, are training.validation's own
    from training.validation import selection_sets

    val = P.load_pack(pack).records("val")
    ours = G.validation_sets(val, 64, 1.3, True, 0, 0.3, workers=2)
    theirs = selection_sets(val, {"size": 64, "margin": 1.3, "align": True, "seed": 0, "p_bi": 0.3})
    assert ours.keys() == theirs.keys()
    for k in ours:
        np.testing.assert_array_equal(ours[k][0], theirs[k][0])
        np.testing.assert_array_equal(ours[k][1], theirs[k][1])

    out = tmp_path / "device" / "verity-sbi-gpu"
    assert G.main(["--pack", str(pack), "--out", str(out), "--minutes", "3", "--size", "64", "--max-steps", "2",
                   "--epoch-steps", "1", "--batch", "4", "--workers", "0", "--threads", "1", "--device", "cpu",
                   "--resamples", "20", "--no-onnx"]) == 0
    history = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in history] == [1, 2] and all(0 <= h["val_auc_mean"] <= 1 for h in history)
    cfg2 = json.loads((out / "config.json").read_text())
    assert cfg2["size"] == 64 and cfg2["p_video"] == 0.0 and cfg2["freeze_bn"] is False and cfg2["epochs"] == 2
    evaluation = json.loads((out / "device_eval.json").read_text())
    assert len(evaluation["scores"]["trained @64"]) == 8 and evaluation["table"]
    assert any(name.endswith("(runtime)") for name in evaluation["scores"])  # the baseline column

    # the lent machine has no OpenCV: there every fake of --p-seamless is pasted by numpy
    hide = tmp_path / "no-cv2"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['cv2'] = None\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hide), str(ROOT)])}
    bare = subprocess.run([sys.executable, "-m", "training.gpu_train", "--pack", str(pack), "--out",
                           str(tmp_path / "no-cv2-run"), "--minutes", "3", "--size", "64", "--max-steps", "2",
                           "--epoch-steps", "1", "--batch", "4", "--workers", "0", "--threads", "1", "--device",
                           "cpu", "--resamples", "20", "--no-onnx", "--p-seamless", "1"],
                          check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert bare.returncode == 0, bare.stderr[-2000:]
    assert "pasted by numpy" in bare.stdout
    assert json.loads((tmp_path / "no-cv2-run" / "config.json").read_text())["p_seamless"] == 1.0

    ck, model, hist = export.load_run(out, "best.pt")  # what the workstation's export reads
    assert ck["config"]["size"] == 64 and ck["epoch"] in (1, 2) and hist
    torch = pytest.importorskip("torch")
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 1)
    assert export.main(["--run", str(out), "--out", str(tmp_path / "model"), "--version", "0.0.1", "--tta", "off"]) == 0
    manifest = json.loads((tmp_path / "model" / "model.json").read_text())
    assert manifest["input"]["size"] == 64 and "training.gpu_train" in manifest["training"]["hardware"]


def test_the_device_reads_a_face_as_the_runtime_does_every_margin_and_its_mirror():
    torch = pytest.importorskip("torch", reason="the [train] extra is not installed (torch): training tests skipped")
    from training import gpu_train as G

    class LeftMinusRight(torch.nn.Module):  # a mirror image gives the opposite logit
        def forward(self, x):
            w = x.shape[-1] // 2
            return (x[..., :w].mean(dim=(1, 2, 3)) - x[..., w:].mean(dim=(1, 2, 3))).reshape(-1, 1)

    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (3, 2, 16, 16, 3), dtype=np.uint8)  # 3 faces, 2 margins each
    crops[:, :, :, :8] //= 4  # darker left halves: every crop alone reads negative
    model, cpu = LeftMinusRight(), torch.device("cpu")
    alone = G.logits(model, crops.reshape(6, 16, 16, 3), cpu)
    assert (alone < -0.5).all()
    np.testing.assert_allclose(G.view_logits(model, crops, cpu), 0.0, atol=1e-5)  # left-right, as tta.hflip

    class MeanPixel(torch.nn.Module):  # blind to the flip: the margins' mean is what is left
        def forward(self, x):
            return x.mean(dim=(1, 2, 3)).reshape(-1, 1)

    m = MeanPixel()
    np.testing.assert_allclose(G.view_logits(m, crops, cpu), G.logits(m, crops.reshape(6, 16, 16, 3), cpu)
                               .reshape(3, 2).mean(axis=1), rtol=1e-5)


def test_eval_margins_default_to_the_shipped_models_and_never_exceed_the_packed_crop():
    assert P.eval_margins(None, [str(P.SHIPPED)], 1.3) == list(load_manifest(str(P.SHIPPED)).crop_margins)
    assert P.eval_margins([1.0], [str(P.SHIPPED)], 1.3) == [1.3, 1.0]
    assert P.eval_margins(None, [], 1.3) == [1.3]
    with pytest.raises(SystemExit, match="no margin may exceed"):
        P.eval_margins([1.45], [], 1.3)
