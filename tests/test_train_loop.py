"""training/train.py and training/export.py end to end: real face photos in, a model folder out
that the runtime loads and scores with. Needs the [train] extra (torch, timm), which the runtime
and the test venv do not install: skipped with a reason there; run it in the training venv
(`.venv-train/bin/pip install pytest pytest-timeout && .venv-train/bin/python -m pytest
tests/test_train_loop.py`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mediagen import face_image, face_photo_paths
from PIL import Image

pytestmark = pytest.mark.train
torch = pytest.importorskip("torch", reason="the [train] extra is not installed (torch): training tests skipped")
pytest.importorskip("timm", reason="the [train] extra is not installed (timm): training tests skipped")

from detector.pipeline import Detector
from training import train as T  # after the skip: it imports torch


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Twelve London-set people, one neutral photo each, shrunk to 480 px (identity = the
    file's leading digits, as in the real corpus)."""
    root = tmp_path_factory.mktemp("corpus") / "faces-london"
    root.mkdir()
    for path in face_photo_paths(12):
        im = Image.open(path).convert("RGB")
        im.thumbnail((480, 480))
        im.save(root / path.name, quality=92)
    return root


def _train(corpus: Path, tmp: Path, device: str, *extra: str) -> Path:
    out = tmp / "model"
    rc = T.main(["--real", str(corpus), "--out", str(out), "--name", "tiny", "--runs", str(tmp / "runs"),
                 "--cache", str(tmp / "cache"), "--splits", str(tmp / "splits.json"),
                 "--size", "96", "--epochs", "1", "--steps-per-epoch", "3", "--batch", "8",
                 "--val-frac", "0.35", "--test-frac", "0.1", "--p-bi", "0.3", "--p-frame", "0.5",
                 "--p-clean-swap", "0.5", "--workers", "0", "--threads", "2", "--device", device,
                 "--version", "0.0.1", *extra])
    assert rc == 0
    return out


def test_a_short_run_exports_a_model_the_runtime_loads_and_scores_with(corpus, tmp_path):
    out = _train(corpus, tmp_path, "cpu")
    run = tmp_path / "runs" / "tiny"
    history = json.loads((run / "history.json").read_text())
    assert history[-1]["step"] == 3 and 0.0 <= history[-1]["val_auc_mean"] <= 1.0
    assert json.loads((run / "config.json").read_text())["device"] == "cpu"
    splits = json.loads((tmp_path / "splits.json").read_text())
    assert splits["counts"]["train"] > 0 and splits["counts"]["val"] > 0
    assert not set(splits["val_identities"]) & set(splits["test_identities"])
    assert any((tmp_path / "cache").glob("*.npz"))  # the crop cache went where --cache said

    manifest = json.loads((out / "model.json").read_text())
    assert manifest["version"] == "0.0.1" and manifest["input"]["size"] == 96
    assert manifest["training"]["p_frame"] == 0.5  # half the pairs were stills of a video
    assert manifest["training"]["p_clean"] == 0.5  # half the cross-identity blends were careful swaps
    card = (out / "MODEL_CARD.md").read_text()
    assert "50% of the pairs start from a still of a video" in card
    assert "50% of the cross-identity blends are made as a careful tool makes a swap" in card
    det = Detector(model=str(out), device="cpu")
    result = det.analyze_image(np.asarray(face_image((800, 600), 400)))
    assert result.label in ("likely_authentic", "suspected_fake")
    assert 0.0 <= result.score <= 1.0 and result.frames[0].faces[0].fake_score is not None


def test_last_pt_exports_the_weights_its_epoch_validated_the_moving_average(corpus, tmp_path):
    """A run whose best.pt stayed at its starting weights (an --init-onnx fine-tune whose epochs never
    beat epoch 0) is exported from last.pt: with --ema that must be the moving average its last
    epoch validated, as best.pt would have kept, not the raw weights beside it."""
    from training import export
    from training.nets import ort_logits

    _train(corpus, tmp_path, "cpu", "--ema", "0.5")
    run = tmp_path / "runs" / "tiny"
    last = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    assert any(not torch.equal(last["model"][k], last["ema"][k]) for k in last["ema"])  # they differ
    for name in ("best.pt", "last.pt"):
        assert export.main(["--run", str(run), "--out", str(tmp_path / name), "--checkpoint", name]) == 0
    x = np.random.default_rng(0).integers(0, 256, size=(4, 96, 96, 3), dtype=np.uint8)  # crops, as validation
    from_best, from_last = (ort_logits(tmp_path / n / "model.onnx", x) for n in ("best.pt", "last.pt"))
    np.testing.assert_allclose(from_last, from_best, atol=1e-5)  # one epoch: best.pt is that epoch's average
    manifest = json.loads((tmp_path / "last.pt" / "model.json").read_text())
    assert manifest["metrics"]["best_epoch"] == 1 and manifest["training"]["steps"] == 3


def test_cuda_demanded_without_a_gpu_is_an_error_not_a_cpu_run():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the error path cannot be shown here")
    with pytest.raises(SystemExit, match="--device cuda: torch .* sees no CUDA device"):
        T.pick_device("cuda")
    assert T.pick_device("auto").type == "cpu"


@pytest.mark.gpu
def test_a_short_run_trains_on_the_gpu(corpus, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device visible to torch")
    out = _train(corpus, tmp_path, "cuda")
    ck = torch.load(tmp_path / "runs" / "tiny" / "last.pt", map_location="cpu", weights_only=False)
    assert ck["config"]["device"] == "cuda"
    assert Detector(model=str(out), device="cpu").analyze_image(np.asarray(face_image((800, 600), 400))).frames


def test_init_onnx_of_an_ensemble_starts_each_network_from_its_own_member(tmp_path):
    """The shipped default model is an ensemble (EfficientNet-Lite0 and MobileNetV2 in one graph):
    --init-onnx of its model.onnx (a fine-tune's or the GPU pack's start) gives each network the
    weights of the member built as it is, computing what that member computes, and not the other's."""
    from detector.manifest import REPOSITORY_MODELS_DIR
    from training.ensemble import unpack
    from training.nets import build_model, load_fused_onnx, ort_logits, predict

    shipped = REPOSITORY_MODELS_DIR / "verity-sbi"
    members = {json.loads((m / "model.json").read_text())["training"]["backbone"]: m
               for m in unpack(shipped, tmp_path)}
    assert set(members) == {"effnet-lite0", "mobilenetv2"}
    crops = np.random.default_rng(3).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    want = {b: ort_logits(m / "model.onnx", crops) for b, m in members.items()}
    assert np.abs(want["effnet-lite0"] - want["mobilenetv2"]).max() > 0.05  # the members differ
    for backbone, logits in want.items():
        got = predict(load_fused_onnx(build_model(backbone, pretrained=False), shipped / "model.onnx"), crops)
        assert got == pytest.approx(logits, abs=1e-3), backbone


def test_init_onnx_of_weights_stored_as_float16_starts_from_those_weights(tmp_path):
    """training.half: a model file whose weights are stored as float16 (an ensemble joined with
    --float16) loads into its network as float32, computing what onnxruntime computes from it."""
    import onnx

    from detector.manifest import REPOSITORY_MODELS_DIR
    from training import half
    from training.ensemble import unpack
    from training.nets import build_model, load_fused_onnx, ort_logits, predict

    effnet = next(m for m in unpack(REPOSITORY_MODELS_DIR / "verity-sbi", tmp_path / "members")
                  if json.loads((m / "model.json").read_text())["training"]["backbone"] == "effnet-lite0")
    halved = half.halve(onnx.load(str(effnet / "model.onnx")))
    assert half.halved(halved) > 50
    onnx.save(halved, str(tmp_path / "model.onnx"))
    crops = np.random.default_rng(4).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    got = predict(load_fused_onnx(build_model("effnet-lite0", pretrained=False), tmp_path / "model.onnx"), crops)
    assert got == pytest.approx(ort_logits(tmp_path / "model.onnx", crops), abs=1e-3)
