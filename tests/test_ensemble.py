"""training/ensemble.py: exported models joined into one ONNX classifier (no torch)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from mediagen import sbi_validation_csv
from onnxgen import tiny_model

from detector.manifest import load_manifest
from detector.pipeline import Detector
from training import ensemble, eval_sets

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "verity-sbi"


def _tiny(tmp_path: Path, size: int = 224, **extra) -> str:
    """A real (if useless) classifier that reads the shipped model's crop."""
    spec = {"input": {"size": size}, "crop": {"margin": 1.3, "align": True}, "tta": {"hflip": True},
            "calibration": {"method": "temperature", "temperature": 4.0}}
    spec.update(extra)
    return tiny_model(tmp_path / "tiny", size=size, **spec)


def _x(seed: int, size: int, n: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (n, 3, size, size)).astype(np.float32)


def _bilinear_half_pixel(x: np.ndarray, k: float) -> np.ndarray:
    """ONNX Resize (linear, half_pixel, no antialias) on the last two axes, written out in numpy."""
    n = int(np.floor(x.shape[-1] * np.float32(k)))
    src = np.clip((np.arange(n) + 0.5) / k - 0.5, 0, x.shape[-1] - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, x.shape[-1] - 1)
    w = (src - lo).astype(np.float32)
    rows = x[..., lo, :] * (1 - w)[:, None] + x[..., hi, :] * w[:, None]
    return rows[..., lo] * (1 - w) + rows[..., hi] * w


def _fed(x: np.ndarray, size: int) -> np.ndarray:
    """What an ensemble's graph feeds a member of this input size."""
    if x.shape[-1] == size:
        return x
    return _bilinear_half_pixel(x, ensemble._resize_scale(x.shape[-1], size)).astype(np.float32)


def _logits(onnx_path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return sess.run(["logit"], {"input": x})[0].reshape(-1)


def test_the_merged_graph_is_the_mean_of_the_calibrated_member_logits(tmp_path):
    shipped = load_manifest(SHIPPED)
    members = [shipped, load_manifest(_tiny(tmp_path, shipped.input.size))]
    merged = ensemble.merge(members)
    path = tmp_path / "merged.onnx"
    import onnx

    onnx.save(merged, str(path))
    x = _x(0, shipped.input.size, 3)
    want = (_logits(members[0].model_path, x) / members[0].calibration.temperature
            + _logits(members[1].model_path, x) / 4.0) / 2
    np.testing.assert_allclose(_logits(path, x), want, rtol=1e-5, atol=1e-5)


def test_the_shipped_ensemble_unpacks_into_its_members_and_joins_back_byte_for_byte(tmp_path):
    """unpack: each member's graph computes its raw logit, and merging them again gives the
    shipped model.onnx itself, so a new network can join without the members being kept elsewhere."""
    import hashlib

    import onnx

    shipped = load_manifest(SHIPPED)
    folders = ensemble.unpack(SHIPPED, tmp_path / "members")
    members = [load_manifest(f) for f in folders]  # their sha256 is checked at load
    assert [(m.name, m.version) for m in members] == [(d["name"], d["version"]) for d in shipped.training["members"]]
    x = _x(1, shipped.input.size)
    assert max(m.input.size for m in members) == shipped.input.size
    z = [_logits(m.model_path, _fed(x, m.input.size)) for m in members]
    assert not np.allclose(z[0], z[1])  # two different networks
    want = sum(zi / m.calibration.temperature for zi, m in zip(z, members)) / len(members)
    np.testing.assert_allclose(_logits(shipped.model_path, x), want, rtol=1e-5, atol=1e-5)
    onnx.save(ensemble.merge(members), str(tmp_path / "again.onnx"))
    assert hashlib.sha256((tmp_path / "again.onnx").read_bytes()).hexdigest() == shipped.sha256
    # a plain model is its own only member
    plain = _tiny(tmp_path)
    assert ensemble.unpack(plain, tmp_path / "plain") == [Path(plain)]


def test_the_flip_is_on_when_a_member_gained_from_it(tmp_path):
    with_flip = load_manifest(_tiny(tmp_path))
    without = load_manifest(_tiny(tmp_path / "noflip", tta={"hflip": False}))
    assert ensemble.ensemble_hflip([with_flip, without]) and ensemble.ensemble_hflip([without, with_flip])
    assert not ensemble.ensemble_hflip([without, without])


def test_members_that_read_different_crops_are_refused(tmp_path):
    other = load_manifest(_tiny(tmp_path, crop={"margin": 1.1, "align": True}))
    with pytest.raises(SystemExit, match="crop"):
        ensemble.check_compatible([load_manifest(SHIPPED), other])
    gray = load_manifest(tiny_model(tmp_path / "gray", size=224, crop={"margin": 1.3, "align": True},
                                    input={"size": 224, "mean": [0.5, 0.5, 0.5]}))
    with pytest.raises(SystemExit, match="input.mean"):
        ensemble.check_compatible([load_manifest(SHIPPED), gray])


def test_members_of_different_input_sizes_join_with_the_smaller_one_resized_in_the_graph(tmp_path):
    """A network trained at a larger input joins smaller members (a 288 px fine-tune joining 224 px
    networks, as tried after verity-sbi 3.0.0): the ensemble reads the largest crop and feeds each smaller
    member that crop resized; unpacked, every member is back at its own size and the members join
    again byte for byte."""
    import hashlib

    import onnx

    members = [load_manifest(f) for f in ensemble.unpack(SHIPPED, tmp_path / "members")]
    size = max(m.input.size for m in members) + 32
    big = load_manifest(tiny_model(tmp_path / "big", size=size, name="big", crop={"margin": 1.3, "align": True},
                                   tta={"hflip": True}, calibration={"method": "temperature", "temperature": 2.0}))
    joined = [*members, big]
    sizes = [m.input.size for m in joined]
    ensemble.check_compatible(joined)
    out = tmp_path / "ens"
    out.mkdir()
    onnx.save(ensemble.merge(joined), str(out / "model.onnx"))
    sha = hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    doc = ensemble.manifest_for(joined, "ens", "0.0.1", sha, True)
    assert doc["input"]["size"] == size and [m["input_size"] for m in doc["training"]["members"]] == sizes
    assert "picture" not in doc and "video" not in doc  # fitted on the first member's scores, not the ensemble's
    (out / "model.json").write_text(json.dumps(doc))
    ens = load_manifest(out)
    x = _x(2, size)
    assert _fed(x, 224).shape == (2, 3, 224, 224)
    want = (sum(_logits(m.model_path, _fed(x, m.input.size)) / m.calibration.temperature for m in members)
            + _logits(big.model_path, x) / 2.0) / 3
    np.testing.assert_allclose(_logits(ens.model_path, x), want, rtol=1e-4, atol=1e-4)
    back = [load_manifest(f) for f in ensemble.unpack(out, tmp_path / "back")]
    assert [m.input.size for m in back] == sizes
    onnx.save(ensemble.merge(back), str(tmp_path / "again.onnx"))
    assert hashlib.sha256((tmp_path / "again.onnx").read_bytes()).hexdigest() == sha


def test_an_ensemble_folder_is_calibrated_on_validation_and_the_runtime_scores_with_it(tmp_path):
    """End to end on real faces: a tiny validation CSV (photos and their Self-Blended fakes)."""
    det = Detector(model=str(SHIPPED), device="cpu")
    sbi_validation_csv(tmp_path, det.face_detector)
    first = ensemble.unpack(SHIPPED, tmp_path / "members")[0]  # one network of the shipped ensemble
    second = tmp_path / "second"
    shutil.copytree(first, second)  # the same network twice: the mean is the model itself
    out = tmp_path / "ens"
    assert ensemble.main([str(first), str(second), "--out", str(out), "--csv", str(tmp_path / "eval.csv"),
                          "--version", "9.9.9", "--name", "verity-ens"]) == 0
    doc = json.loads((out / "model.json").read_text())
    network = load_manifest(first).training["sha256_at_joining"]  # the sha256 of 2.0.0's own file
    assert doc["version"] == "9.9.9" and [m["sha256"] for m in doc["training"]["members"]] == [network] * 2
    auc = doc["metrics"]["validation_auc"]
    assert len({round(t["mean"], 4) for t in auc.values()}) == 1  # identical members, identical ranking
    assert doc["thresholds"]["review"] <= doc["thresholds"]["block"] <= 1.0
    res = Detector(model=str(out), device="cpu").analyze_path(tmp_path / "fake0.png")
    assert res.model_name == "verity-ens" and res.model_version == "9.9.9" and res.score is not None
    # a first card, which the evaluation can fill
    card = out / "MODEL_CARD.md"
    text = card.read_text()
    assert text.startswith("# verity-ens 9.9.9") and f"review` at P >=\n{doc['thresholds']['review']:.4f}" in text
    eval_sets.write_card(card, "| measured | here |")
    assert "| measured | here |" in card.read_text() and "## Members" in card.read_text()
    # a card kept by hand is never overwritten
    card.write_text("hand-written\n")
    # an ensemble given as a member counts as its members: here three copies of one network,
    # joined with their weights stored as float16
    before = (out / "model.onnx").stat().st_size
    assert ensemble.main([str(out), str(first), "--out", str(out), "--csv", str(tmp_path / "eval.csv"),
                          "--version", "9.9.10", "--name", "verity-ens", "--float16"]) == 0
    assert card.read_text() == "hand-written\n"
    doc = json.loads((out / "model.json").read_text())
    assert doc["version"] == "9.9.10" and len(doc["training"]["members"]) == 3
    assert [m["sha256"] for m in doc["training"]["members"]] == [network] * 3
    assert doc["training"]["precision"].startswith("float16 weights")
    assert (out / "model.onnx").stat().st_size < 0.55 * 1.5 * before  # three networks at half the bytes
    auc16 = doc["metrics"]["validation_auc"]
    assert len({round(t["mean"], 4) for t in auc16.values()}) == 1
    assert abs(auc16["verity-ens 9.9.10"]["mean"] - auc["verity-ens 9.9.9"]["mean"]) < 0.01
    res16 = Detector(model=str(out), device="cpu").analyze_path(tmp_path / "fake0.png")
    assert res16.score is not None and abs(res16.classifier_score - res.classifier_score) < 0.01


def test_float16_storage_halves_the_file_and_keeps_the_network(tmp_path):
    """training.half: the shipped ensemble with its weights stored as float16 takes about half the
    room, onnxruntime still computes in float32 with logits within 5e-3 of the float32 file's, the
    training tools read it back as float32 (widen: the same logits exactly), its members unpack
    and join back to the same halved file byte for byte, and a weight float16 cannot hold is refused."""
    import hashlib

    import onnx
    from onnx import numpy_helper

    from training import half

    shipped = load_manifest(SHIPPED)
    full = onnx.load(str(shipped.model_path))
    halved = half.halve(full)
    assert half.halved(halved) > 50 and half.halved(full) == 0
    path = tmp_path / "half.onnx"
    onnx.save(halved, str(path))
    assert path.stat().st_size < 0.55 * shipped.model_path.stat().st_size
    x = _x(3, shipped.input.size, 4)
    z_full, z_half = _logits(shipped.model_path, x), _logits(path, x)
    assert np.abs(z_half - z_full).max() < 5e-3 and not np.array_equal(z_half, z_full)  # rounded, not dropped
    wide = half.widen(halved)
    assert half.halved(wide) == 0
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in wide.graph.initializer)
    onnx.save(wide, str(tmp_path / "wide.onnx"))
    np.testing.assert_allclose(_logits(tmp_path / "wide.onnx", x), z_half, rtol=1e-6, atol=1e-6)
    assert half.halve(wide).SerializeToString() == halved.SerializeToString()
    # an ensemble folder stored so: its members come out float32 and join back to it
    folder = tmp_path / "ens16"
    folder.mkdir()
    onnx.save(halved, str(folder / "model.onnx"))
    doc = json.loads((SHIPPED / "model.json").read_text())
    doc["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (folder / "model.json").write_text(json.dumps(doc))
    members = [load_manifest(f) for f in ensemble.unpack(folder, tmp_path / "members")]
    assert all(half.halved(onnx.load(str(m.model_path))) == 0 for m in members)
    assert half.halve(ensemble.merge(members)).SerializeToString() == halved.SerializeToString()
    # float16 holds |w| <= 65504
    big = onnx.ModelProto()
    big.CopyFrom(full)
    t = big.graph.initializer[max(range(len(big.graph.initializer)), key=lambda i: np.prod(big.graph.initializer[i].dims))]
    t.CopyFrom(numpy_helper.from_array(np.full(tuple(t.dims), 1e5, np.float32), t.name))
    with pytest.raises(ValueError, match="do not fit float16"):
        half.halve(big)
