"""detector/evaluation.py: metrics against known values, data sets, and `verity eval` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from mediagen import face_image, no_face_image, write_video
from PIL import Image

from cli.eval import eval_command
from detector import evaluation as ev

# --- metrics ---------------------------------------------------------------------------------


def test_perfect_separation():
    y, s = [0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.8, 0.9]
    assert ev.roc_auc(y, s) == 1.0
    assert ev.average_precision(y, s) == 1.0
    assert ev.equal_error_rate(y, s) == 0.0
    assert ev.tpr_at_fpr(y, s) == 1.0


def test_reversed_scores():
    y, s = [0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]
    assert ev.roc_auc(y, s) == 0.0
    assert ev.equal_error_rate(y, s) == 1.0
    assert ev.tpr_at_fpr(y, s) == 0.0
    # Precision at the only recall steps (3rd and 4th item): 1/3 and 2/4.
    assert ev.average_precision(y, s) == pytest.approx(0.5 * (1 / 3) + 0.5 * (2 / 4))


def test_hand_computed_small_case():
    # The classic 4-item example: 3 of the 4 (fake, real) pairs are ordered right.
    y, s = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    assert ev.roc_auc(y, s) == pytest.approx(0.75)
    # Ranked: 0.8 (fake, P=1), 0.4 (real), 0.35 (fake, P=2/3): AP = 0.5*1 + 0.5*2/3.
    assert ev.average_precision(y, s) == pytest.approx(5 / 6)
    fpr, tpr, thr = ev.roc_curve(y, s)
    assert fpr.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert thr[0] == np.inf and thr[1:].tolist() == [0.8, 0.4, 0.35, 0.1]
    # fnr - fpr: 1, 0.5, 0, ... -> equal at the third ROC point, fpr 0.5.
    assert ev.equal_error_rate(y, s) == pytest.approx(0.5)
    assert ev.tpr_at_fpr(y, s) == 0.5


def test_ties_count_half():
    assert ev.roc_auc([0, 1], [0.5, 0.5]) == 0.5
    # One fake tied with one of two reals, above the other: (1 + 0.5) / 2.
    assert ev.roc_auc([0, 0, 1], [0.2, 0.7, 0.7]) == pytest.approx(0.75)
    # All tied: the ROC is the diagonal; EER 0.5; no threshold keeps FPR <= 5% but the empty one.
    y, s = [0, 0, 1, 1], [0.3] * 4
    assert ev.equal_error_rate(y, s) == pytest.approx(0.5)
    assert ev.tpr_at_fpr(y, s) == 0.0
    assert ev.average_precision(y, s) == pytest.approx(0.5)


def test_auc_matches_brute_force_pair_count():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300) + 0.3 * y, 1)            # rounding makes many ties
    pos, neg = s[y == 1], s[y == 0]
    brute = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (pos.size * neg.size)
    assert ev.roc_auc(y, s) == pytest.approx(brute)


def test_tpr_at_fpr_takes_the_best_threshold_at_or_under_the_rate():
    y = [0] * 20 + [1, 1]
    s = list(range(20)) + [5.5, 19.5]
    # Threshold 19 lets exactly one real of 20 through (5% FPR) and catches one fake of two.
    assert ev.tpr_at_fpr(y, s) == 0.5
    assert ev.tpr_at_fpr(y, s, target=0.75) == 1.0


def test_one_class_is_an_error_in_metrics_and_none_in_a_summary():
    with pytest.raises(ValueError):
        ev.roc_auc([1, 1], [0.2, 0.3])
    d = ev.summarize([1, 1], [0.2, 0.7], threshold=0.5)
    assert d["auc"] is None and d["n_fake"] == 2 and d["tpr_at_threshold"] == 0.5


def test_build_report_leaves_no_face_items_out_of_the_metrics():
    outs = [ev.Outcome("r1", 0, "real", "original", ev.SCORED, 0.1),
            ev.Outcome("r2", 0, "real", "original", ev.NO_FACE, None),
            ev.Outcome("f1", 1, "fake", "original", ev.SCORED, 0.9),
            ev.Outcome("f2", 1, "fake", "original", ev.UNREADABLE, None)]
    r = ev.build_report(outs, 0.5)["conditions"]["original"]
    assert r["overall"]["auc"] == 1.0
    assert (r["overall"]["n_real"], r["overall"]["n_fake"]) == (1, 1)
    assert (r["overall"]["no_face"], r["overall"]["unreadable"]) == (1, 1)
    assert r["groups"]["real"]["no_face"] == 1 and r["groups"]["real"]["n_items"] == 2
    assert r["groups"]["fake"]["unreadable"] == 1


# --- data sets and conditions ----------------------------------------------------------------


def test_csv_with_header_relative_paths_conditions_and_groups(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "eval.csv").write_text(
        "path,label,condition,group\n"
        "a.jpg,real,,studio\n"
        "# a comment\n"
        f"{tmp_path / 'b.mp4'},fake,jpeg50,swaps\n"
        "c.png,1\n")
    items = ev.items_from_csv(tmp_path / "eval.csv")
    assert [(i.path.name, i.label, i.condition, i.group) for i in items] == [
        ("a.jpg", 0, None, "studio"), ("b.mp4", 1, "jpeg50", "swaps"), ("c.png", 1, None, "fake")]
    assert items[0].path == tmp_path / "a.jpg" and items[1].kind == "video"
    assert [c for _, c in ev.plan(items, ["original", "half"])] == ["original", "half", "jpeg50", "original", "half"]
    (tmp_path / "bad.csv").write_text("a.jpg,maybe\n")
    with pytest.raises(ValueError, match="row 1"):
        ev.items_from_csv(tmp_path / "bad.csv")


def test_conditions_change_the_pixels_as_named():
    rgb = np.asarray(face_image((320, 240), 200))
    assert ev.apply_condition(rgb, "original") is rgb
    half = ev.apply_condition(rgb, "half")
    assert half.shape == (120, 160, 3)
    j = ev.apply_condition(rgb, "jpeg50")
    assert j.shape == rgb.shape and 0 < np.abs(j.astype(int) - rgb.astype(int)).mean() < 10
    with pytest.raises(ValueError):
        ev.apply_condition(rgb, "blur")


# --- verity eval end to end ------------------------------------------------------------------

def redness_model(directory, size: int = 64):
    """A real ONNX classifier with a known rule: logit = 8 * (mean red - mean blue) of the crop."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from detector.manifest import sha256_file

    w = numpy_helper.from_array(np.array([[8.0], [0.0], [-8.0]], dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input"], ["mean"], axes=[2, 3], keepdims=0),
         helper.make_node("MatMul", ["mean", "w"], ["logit"])],
        "redness", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, size, size])],
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["n", 1])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    directory.mkdir(parents=True)
    onnx.save(model, directory / "model.onnx")
    (directory / "model.json").write_text(json.dumps({
        "name": "redness", "version": "1", "sha256": sha256_file(directory / "model.onnx"),
        "input": {"size": size, "mean": [0, 0, 0], "std": [1, 1, 1]},
        "thresholds": {"review": 0.5, "block": 0.9}}))
    return directory


def reddened(im: Image.Image) -> Image.Image:
    a = np.asarray(im).astype(int) + np.array([70, 0, -50])
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalset")
    real, fake = root / "real", root / "fake"
    real.mkdir()
    (fake / "nested").mkdir(parents=True)
    for i in range(2):
        im = face_image((640, 360), 260, index=i)
        im.save(real / f"face{i}.jpg", quality=92)
        reddened(im).save(fake / "nested" / f"face{i}.png")
    no_face_image((320, 240)).save(real / "landscape.jpg", quality=92)
    write_video(fake / "clip.mp4", reddened(face_image((480, 360), 300)), seconds=1.0, fps=8)
    (real / "notes.txt").write_text("not media")
    return root, redness_model(root / "model")


def test_eval_command_table_over_folders(eval_set):
    root, model = eval_set
    r = CliRunner().invoke(eval_command, ["--real", str(root / "real"), "--fake", str(root / "fake"),
                                             "--model", str(model), "--device", "cpu", "--frames", "4",
                                             "--conditions", "original,half", "--per-file"])
    assert r.exit_code == 0, r.output
    assert "condition original" in r.output and "condition half" in r.output
    assert "ROC-AUC" in r.output and "landscape.jpg" in r.output and "no_face" in r.output


def test_eval_command_json_separates_the_classes_and_counts_no_face_apart(eval_set):
    root, model = eval_set
    r = CliRunner().invoke(eval_command, ["--real", str(root / "real"), "--fake", str(root / "fake"),
                                             "--model", str(model), "--device", "cpu", "--frames", "4",
                                             "--conditions", "original,jpeg50,half", "--json", "--per-file"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["model"]["name"] == "redness"
    assert set(rep["conditions"]) == {"original", "jpeg50", "half"}
    for c, block in rep["conditions"].items():
        o = block["overall"]
        assert o["n_items"] == 6, c                 # 3 real (one without a face) + 2 photos + 1 video
        assert o["no_face"] == 1 and o["unreadable"] == 0
        assert (o["n_real"], o["n_fake"]) == (2, 3)
        assert o["auc"] == 1.0 and o["tpr_at_5fpr"] == 1.0 and o["eer"] == 0.0
        assert block["groups"]["real"]["no_face"] == 1
    files = {(f["path"].rsplit("/", 1)[1], f["condition"]): f for f in rep["files"]}
    assert files[("landscape.jpg", "jpeg50")]["status"] == "no_face"
    assert files[("landscape.jpg", "jpeg50")]["score"] is None
    video = files[("clip.mp4", "half")]
    assert video["status"] == "scored" and video["frames"] == 4 and video["faces"] >= 3
    assert files[("face0.png", "original")]["score"] > files[("face0.jpg", "original")]["score"]


def test_eval_command_reads_a_csv_and_rejects_unknown_conditions(eval_set, tmp_path):
    root, model = eval_set
    csv_path = tmp_path / "set.csv"
    csv_path.write_text(f"{root / 'real' / 'face0.jpg'},real\n{root / 'fake' / 'nested' / 'face0.png'},fake,half\n")
    r = CliRunner().invoke(eval_command, ["--csv", str(csv_path), "--model", str(model), "--device", "cpu",
                                             "--json", "--per-file"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert {(f["label"], f["condition"]) for f in rep["files"]} == {(0, "original"), (1, "half")}
    bad = CliRunner().invoke(eval_command, ["--csv", str(csv_path), "--conditions", "original,sepia"])
    assert bad.exit_code == 2 and "sepia" in bad.output
